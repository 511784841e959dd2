//! homeaddr client shim daemon (correspondent node with route optimization)
