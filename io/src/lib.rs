//! homeaddr I/O shell pieces: TUN devices with offload and batched UDP
