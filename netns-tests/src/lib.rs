//! homeaddr namespace topology builder, user-space WAN emulator, and namespace tests
