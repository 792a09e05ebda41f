// L-BFGS's update of the image style transfer optimises: image = clamp(image + t d, 0, 1), with
// t one of the optimiser's scalars on the GPU (the step length, or 0 where the direction does not
// descend), then normalised into the network's input (as adam.wgsl does). The clamp is the
// PyTorch tutorial's, done before each evaluation.

struct Params {
    len: u32,
    plane: u32,
    step: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> direction: array<f32>;
@group(0) @binding(2) var<storage, read> scalars: array<f32>;
@group(0) @binding(3) var<storage, read> normalization: array<f32>;
@group(0) @binding(4) var<storage, read_write> image: array<f32>;
@group(0) @binding(5) var<storage, read_write> input: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn image_update(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = folded_index(id, groups);
    if i >= params.len {
        return;
    }
    let x = clamp(image[i] + scalars[params.step] * direction[i], 0.0, 1.0);
    image[i] = x;
    let c = i / params.plane;
    input[i] = (x - normalization[c]) / normalization[3u + c];
}
