//! Batch norm folded into the convolution before it, the fast way to run inference.
//!
//! At inference a batch norm is a fixed per-channel affine map, `y = s (x - mean) + beta` with
//! `s = gamma / sqrt(var + eps)`, so the convolution it follows can absorb it: scale the
//! convolution's weights of output channel `o` by `s[o]`, and give it the bias
//! `s[o] (b[o] - mean[o]) + beta[o]` (`b` = 0 for the torchvision networks' bias-free
//! convolutions). The batch norm's ReLU becomes the convolution's. One pass over memory fewer
//! per batch norm, and ResNet-50's 53 batch norms cost nothing.
//!
//! The folded layer takes the batch norm's name and place, since it produces what the batch norm
//! did; `convnet check` compares it with the reference's batch norm output of that name. The
//! products are formed in f64 and rounded once.

use crate::error::{Error, Result};
use crate::model::{Layer, LayerKind, Network, INPUT};
use crate::weights::{Tensor, Weights};

/// The network with every batch norm that directly follows a convolution (read by nothing else,
/// without ReLU) folded into it, and its weights folded to match. A network without batch norm
/// comes back unchanged. Fails when the network does not plan or `weights` do not fit it.
pub fn fold_batch_norm(network: &Network, weights: &Weights) -> Result<(Network, Weights)> {
    weights.check_against(&network.plan(1)?)?;
    let layers = explicit_inputs(&network.layers);
    let foldable: Vec<Option<usize>> = (0..layers.len()).map(|i| folded_conv(&layers, i)).collect();
    if foldable.iter().all(Option::is_none) {
        return Ok((network.clone(), weights.clone()));
    }
    let removed: Vec<usize> = foldable.iter().flatten().copied().collect();
    let mut folded_layers = Vec::new();
    let mut tensors = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        if removed.contains(&i) {
            continue;
        }
        match foldable[i] {
            Some(conv) => {
                let (fused, fused_tensors) = fuse(&layers[conv], layer, weights)?;
                folded_layers.push(fused);
                tensors.extend(fused_tensors);
            }
            None => {
                for (name, tensor) in weights.iter() {
                    if name
                        .rsplit_once('.')
                        .is_some_and(|(owner, _)| owner == layer.name)
                    {
                        tensors.push((name.to_string(), tensor.clone()));
                    }
                }
                folded_layers.push(layer.clone());
            }
        }
    }
    let folded = Network {
        layers: folded_layers,
        stages: Vec::new(),
        ..network.clone()
    };
    Ok((folded, Weights::from_tensors(tensors)))
}

/// Every layer naming its inputs, so that layers can move without changing what they read.
fn explicit_inputs(layers: &[Layer]) -> Vec<Layer> {
    layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let mut layer = layer.clone();
            if layer.inputs.is_empty() {
                let previous = if i == 0 { INPUT } else { &layers[i - 1].name };
                layer.inputs = vec![previous.to_string()];
            }
            layer
        })
        .collect()
}

/// For a batch norm at `index` that can absorb the convolution it reads, that convolution's index.
fn folded_conv(layers: &[Layer], index: usize) -> Option<usize> {
    if !matches!(layers[index].kind, LayerKind::BatchNorm { .. }) {
        return None;
    }
    let [input] = layers[index].inputs.as_slice() else {
        return None;
    };
    let conv = layers.iter().position(|l| l.name == *input)?;
    let is_plain_conv = matches!(layers[conv].kind, LayerKind::Conv2d { relu: false, .. });
    let readers = layers.iter().filter(|l| l.inputs.contains(input)).count();
    (is_plain_conv && readers == 1).then_some(conv)
}

/// The convolution with the batch norm folded in, under the batch norm's name, and its tensors.
/// `weights` have been checked against the network, so every tensor has its layer's shape.
fn fuse(conv: &Layer, norm: &Layer, weights: &Weights) -> Result<(Layer, Vec<(String, Tensor)>)> {
    let (
        LayerKind::Conv2d {
            out_channels,
            window,
            groups,
            bias,
            ..
        },
        LayerKind::BatchNorm { eps, relu },
    ) = (&conv.kind, &norm.kind)
    else {
        return Err(Error::Internal(format!(
            "{} and {} are not a convolution and a batch norm to fold",
            conv.name, norm.name
        )));
    };
    let get = |layer: &Layer, suffix: &str| -> Result<Vec<f64>> {
        let values = weights.tensor(&layer.name, suffix)?;
        Ok(values.iter().map(|&v| f64::from(v)).collect())
    };
    let (gamma, beta) = (get(norm, "weight")?, get(norm, "bias")?);
    let (mean, var) = (get(norm, "running_mean")?, get(norm, "running_var")?);
    let conv_bias = if *bias {
        get(conv, "bias")?
    } else {
        vec![0.0; *out_channels]
    };
    let scale: Vec<f64> = (0..*out_channels)
        .map(|o| gamma[o] / (var[o] + f64::from(*eps)).sqrt())
        .collect();
    let weight = weights
        .get(&format!("{}.weight", conv.name))
        .ok_or_else(|| Error::Internal(format!("{}: no weight to fold into", conv.name)))?;
    let per_output = weight.data.len() / out_channels;
    let folded_weight = weight
        .data
        .iter()
        .enumerate()
        .map(|(i, &w)| (f64::from(w) * scale[i / per_output]) as f32)
        .collect();
    let folded_bias = (0..*out_channels)
        .map(|o| (scale[o] * (conv_bias[o] - mean[o]) + beta[o]) as f32)
        .collect();
    let layer = Layer {
        name: norm.name.clone(),
        kind: LayerKind::Conv2d {
            out_channels: *out_channels,
            window: *window,
            groups: *groups,
            relu: *relu,
            bias: true,
        },
        inputs: conv.inputs.clone(),
    };
    let tensors = vec![
        (
            format!("{}.weight", norm.name),
            Tensor {
                shape: weight.shape.clone(),
                data: folded_weight,
            },
        ),
        (
            format!("{}.bias", norm.name),
            Tensor {
                shape: vec![*out_channels],
                data: folded_bias,
            },
        ),
    ];
    Ok((layer, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::model::{Dims, Padding, Window};

    fn conv_norm(out_channels: usize) -> Network {
        let conv = LayerKind::Conv2d {
            out_channels,
            window: Window::square(3, 1, Padding::Same),
            groups: 1,
            relu: false,
            bias: false,
        };
        let norm = LayerKind::BatchNorm {
            eps: 1e-5,
            relu: true,
        };
        let input = Dims {
            channels: 2,
            height: 3,
            width: 3,
        };
        Network::new(
            "conv-norm",
            input,
            vec![Layer::new("conv", conv), Layer::new("bn", norm)],
        )
    }

    #[test]
    fn fold_batch_norm_refuses_weights_of_another_network() {
        let network = conv_norm(2);
        let weights = Weights::init(&network, 1).unwrap();
        let (folded, folded_weights) = fold_batch_norm(&network, &weights).unwrap();
        assert_eq!(folded.layers.len(), 1);
        assert_eq!(folded_weights.tensor("bn", "bias").unwrap().len(), 2);
        let other = Weights::init(&conv_norm(4), 1).unwrap();
        let err = fold_batch_norm(&network, &other).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let mut missing = weights;
        missing.get_mut("bn.running_var").unwrap().data.clear();
        assert!(fold_batch_norm(&network, &missing)
            .unwrap_err()
            .to_string()
            .contains("bn.running_var"));
    }
}
