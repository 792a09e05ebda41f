// The parameters of every convolution kernel (forward, filter gradient, input gradient), one
// struct so that one Rust struct (gpu::ops::conv::Conv2dParams) feeds all three.
struct Conv2dParams {
    batch: u32,
    in_channels: u32,
    in_height: u32,
    in_width: u32,
    out_channels: u32,
    out_height: u32,
    out_width: u32,
    groups: u32,
    kernel_height: u32,
    kernel_width: u32,
    stride_height: u32,
    stride_width: u32,
    pad_top: u32,
    pad_left: u32,
    // 1: ReLU fused into the forward's store (the backward kernels run after ReLU's backward).
    relu: u32,
    // out_channels / groups rounded up to BLOCK: the row length of the packed weights.
    packed_out_per_group: u32,
    // Output pixels one chunk of the filter gradient sums (conv2d_backward_filter only).
    pixels_per_chunk: u32,
    // in_channels / groups rounded up to BLOCK: the row length of the rotated weights
    // (conv2d_backward_data only).
    packed_in_per_group: u32,
    _pad0: u32,
    _pad1: u32,
}

