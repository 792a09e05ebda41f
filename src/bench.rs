//! The seed's benchmark: `burn_in` untimed steps, then `batches` timed ones, each a whole pass
//! over one batch, timed from submission until the GPU has finished (a queue wait, not just the
//! submit). Nothing is allocated, compiled or read back inside the loop: the network's buffers
//! and bind groups exist before it starts.

use std::time::Instant;

use crate::error::Result;
use crate::gpu::Runner;

/// Timings of one benchmark run, in seconds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Timings {
    /// The untimed warm-up steps (the first includes shader compilation on some drivers).
    pub burn_in: Vec<f64>,
    /// The timed steps.
    pub steps: Vec<f64>,
    pub mean: f64,
    /// Standard deviation over the timed steps (population form, as the seed computes it, but
    /// without the seed's slip of counting the burn-in steps).
    pub sd: f64,
}

/// Mean and population standard deviation.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// What one benchmark step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Pass {
    /// The forward pass to the logits (the seed's "Forward").
    Forward,
    /// Forward, then the gradients of `l2_loss(logits)` for every parameter, no update (the
    /// seed's "Forward-backward").
    ForwardBackward,
}

impl Pass {
    /// The seed's name for the pass, as its summary line prints it.
    pub fn seed_name(self) -> &'static str {
        match self {
            Pass::Forward => "Forward",
            Pass::ForwardBackward => "Forward-backward",
        }
    }
}

/// Runs `burn_in + batches` passes; `on_step(i, seconds)` is called after each, `i` counting the
/// timed steps from 0 (burn-in steps get `None`). A forward-backward pass needs a network built
/// with gradients.
pub fn run(
    net: &dyn Runner,
    pass: Pass,
    batches: usize,
    burn_in: usize,
    mut on_step: impl FnMut(Option<usize>, f64),
) -> Result<Timings> {
    let mut warm = Vec::with_capacity(burn_in);
    let mut steps = Vec::with_capacity(batches);
    for i in 0..burn_in + batches {
        let start = Instant::now();
        match pass {
            Pass::Forward => net.forward()?,
            Pass::ForwardBackward => net.forward_backward()?,
        }
        let seconds = start.elapsed().as_secs_f64();
        if i < burn_in {
            warm.push(seconds);
            on_step(None, seconds);
        } else {
            steps.push(seconds);
            on_step(Some(i - burn_in), seconds);
        }
    }
    let (mean, sd) = mean_sd(&steps);
    Ok(Timings {
        burn_in: warm,
        steps,
        mean,
        sd,
    })
}

#[cfg(test)]
mod tests {
    use super::mean_sd;

    #[test]
    fn mean_and_population_sd() {
        let (mean, sd) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert!((mean - 2.5).abs() < 1e-12);
        assert!((sd - 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[]), (0.0, 0.0));
    }
}
