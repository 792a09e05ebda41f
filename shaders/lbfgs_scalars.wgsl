// L-BFGS's scalar steps, on the GPU, as torch.optim.LBFGS takes them (f32, no line search). The
// workgroup sums `count` partial sums of dot.wgsl (two sets, for `curvature`) and one invocation
// updates the scalars:
//   ALPHA  (slot j): alpha[j] = rho[j] * (s_j . q)
//   COEF   (slot j): coef = alpha[j] - rho[j] * (y_j . r)
//   CURVATURE (slot j): ys = y_j . s_j; if ys > 1e-10 the pair enters the history:
//                   rho[j] = 1 / ys, h_diag = ys / (y_j . y_j), accepted = 1; else accepted = 0
//   FIRST_STEP:     t = min(1, 1 / |g|_1) * lr (the first iteration's step length), h_diag = 1
//                   (the initial Hessian's diagonal until a pair enters the history)
//   SET_STEP:       t = lr
//   DESCENT:        move = t if g . d < -1e-9, else 0: PyTorch stops an iteration whose direction
//                   does not descend (its `gtd > -tolerance_change`) before moving the image
// Layout of `scalars` (see src/gpu/ops/lbfgs.rs): rho[slots], alpha[slots], then t, h_diag,
// coef, accepted, move.

const ALPHA: u32 = 0u;
const COEF: u32 = 1u;
const CURVATURE: u32 = 2u;
const FIRST_STEP: u32 = 3u;
const SET_STEP: u32 = 4u;
const DESCENT: u32 = 5u;

struct Params {
    op: u32,
    slot: u32,
    slots: u32,
    count: u32,
    learning_rate: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> scalars: array<f32>;

@compute @workgroup_size(REDUCTION)
fn lbfgs_scalars(@builtin(local_invocation_index) local: u32) {
    var sums = vec2<f32>(0.0, 0.0);
    for (var i = local; i < params.count; i += REDUCTION) {
        sums += vec2<f32>(partial[i], partial[params.count + i]);
    }
    let total = segment_sum(local, REDUCTION, sums);
    if local != 0u {
        return;
    }
    let rho = params.slot;
    let alpha = params.slots + params.slot;
    let t = 2u * params.slots;
    let h_diag = t + 1u;
    let coef = t + 2u;
    let accepted = t + 3u;
    let step_taken = t + 4u;
    switch params.op {
        case ALPHA: {
            scalars[alpha] = total.x * scalars[rho];
        }
        case COEF: {
            scalars[coef] = scalars[alpha] - total.x * scalars[rho];
        }
        case CURVATURE: {
            let ys = total.x;
            if ys > 1e-10 {
                scalars[rho] = 1.0 / ys;
                scalars[h_diag] = ys / total.y;
                scalars[accepted] = 1.0;
            } else {
                scalars[accepted] = 0.0;
            }
        }
        case FIRST_STEP: {
            scalars[t] = min(1.0, 1.0 / total.x) * params.learning_rate;
            scalars[h_diag] = 1.0;
        }
        case SET_STEP: {
            scalars[t] = params.learning_rate;
        }
        case DESCENT: {
            scalars[step_taken] = select(0.0, scalars[t], total.x < -1e-9);
        }
        default: {}
    }
}
