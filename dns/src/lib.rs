//! homeaddr embedded geo-DNS (authoritative, EDNS Client Subnet)
