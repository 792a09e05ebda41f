
// Where the units of one input of a channel concatenation lie in its output: every image's
// block of `input_per_image` units goes to `offset` within the image's `output_per_image`.
// An invocation handles CONCAT_UNITS consecutive units and divides once, for the first;
// the rest step along, jumping to the next image's slice at the end of a block (on a CPU adapter
// an integer division costs as much as a unit's copy).

// The output index of input unit `i`, and how many units remain in its image's block.
fn first_destination(i: u32) -> vec2<u32> {
    let image = i / params.input_per_image;
    let within = i - image * params.input_per_image;
    let at = image * params.output_per_image + params.offset + within;
    return vec2<u32>(at, params.input_per_image - within);
}

fn next_destination(at: vec2<u32>) -> vec2<u32> {
    if at.y == 1u {
        // The block's last unit: the next image's slice starts a gap of the other inputs later.
        let gap = params.output_per_image - params.input_per_image;
        return vec2<u32>(at.x + 1u + gap, params.input_per_image);
    }
    return vec2<u32>(at.x + 1u, at.y - 1u);
}
