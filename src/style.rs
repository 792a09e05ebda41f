//! Neural style transfer as Gatys, Ecker and Bethge describe it ("A Neural Algorithm of Artistic
//! Style", 2015; "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016): an image
//! optimised so that its deep VGG features match a content image's and the Gram matrices of its
//! features match a style image's. What the objective is, on the CPU and in f64 here; the GPU
//! runs it in [`crate::gpu::StyleTransfer`]. The terms and their normalisations are PyTorch's
//! neural-transfer tutorial's (docs/style.md):
//!
//! ```text
//! content = content_weight * sum over content layers of mean((F - P)^2)
//! style   = style_weight   * sum over style layers of mean((G(F) - G(S))^2),  G(F) = F F^T / (C H W)
//! tv      = tv_weight      * sum over the image of (right - pixel)^2 + (below - pixel)^2
//! ```
//!
//! `F` are the optimised image's features at a layer (`[C][H W]`, after the layer's ReLU), `P`
//! the content image's, `S` the style image's (at the style image's own size). The image is
//! optimised in [0, 1]; the network reads it normalised with ImageNet's mean and standard
//! deviation, as torchvision's VGG expects.

use crate::error::{Error, Result};
use crate::model::{vgg, Dims, LayerKind, LayerPlan, Network};
use crate::reference::{self, Parameters, Real};

/// ImageNet's per-channel mean (RGB), which torchvision's networks subtract from [0, 1] images.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (RGB), which they divide by.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Gatys et al.'s content layer.
pub const DEFAULT_CONTENT_LAYERS: &[&str] = &["conv4_2"];
/// Gatys et al.'s style layers.
pub const DEFAULT_STYLE_LAYERS: &[&str] = &["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"];

/// How the feature network pools between its blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pooling {
    /// VGG's own 2x2 max pools.
    #[default]
    Max,
    /// Average pools to half the size (PyTorch's `AdaptiveAvgPool2d((H // 2, W // 2))`, which
    /// is `AvgPool2d(2, 2)` wherever the size is even), which Gatys et al. found to give
    /// smoother results.
    Average,
}

/// VGG's convolutions by Gatys et al.'s names (`conv4_2`: block 4's second convolution) beside
/// this crate's (torchvision's) layer names (`features.21`), in the network's order.
pub fn conv_names(network: &Network) -> Vec<(String, String)> {
    let mut names = Vec::new();
    let (mut block, mut conv) = (1, 0);
    for layer in &network.layers {
        match layer.kind {
            LayerKind::Conv2d { .. } => {
                conv += 1;
                names.push((format!("conv{block}_{conv}"), layer.name.clone()));
            }
            LayerKind::MaxPool { .. } | LayerKind::AdaptiveAvgPool { .. } => {
                block += 1;
                conv = 0;
            }
            _ => {}
        }
    }
    names
}

/// The layer name of a feature layer given as Gatys et al. name it (`conv4_2`, or `relu4_2`:
/// the ReLU is fused into the convolution, so both are its output after the ReLU) or as
/// torchvision indexes it (`features.21`, or `features.22`, the ReLU module after it).
pub fn resolve_layer(network: &Network, name: &str) -> Result<String> {
    let names = conv_names(network);
    let gatys = name.replacen("relu", "conv", 1);
    let found = names.iter().find(|(g, layer)| {
        *g == gatys
            || layer == name
            || layer
                .strip_prefix("features.")
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| format!("features.{}", i + 1) == name)
    });
    match found {
        Some((_, layer)) => Ok(layer.clone()),
        None => Err(Error::InvalidArgument(format!(
            "{name} is not one of {}'s convolutions ({} ... {}, or features.N)",
            network.name,
            names.first().map_or("", |(g, _)| g.as_str()),
            names.last().map_or("", |(g, _)| g.as_str()),
        ))),
    }
}

/// VGG-`depth`'s feature layers for one image of `dims`, up to and including the deepest of
/// `needed` (layer names, see [`resolve_layer`]): no classifier. With [`Pooling::Average`] each
/// max pool becomes an average pool to the same size.
pub fn feature_network(
    depth: usize,
    pooling: Pooling,
    dims: Dims,
    needed: &[String],
) -> Result<Network> {
    let mut network = vgg(depth)?;
    let deepest = needed
        .iter()
        .map(|name| {
            network
                .layers
                .iter()
                .position(|l| l.name == *name)
                .ok_or_else(|| Error::InvalidArgument(format!("no layer {name} in VGG-{depth}")))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .ok_or_else(|| Error::InvalidArgument("no feature layer to optimise for".into()))?;
    network.layers.truncate(deepest + 1);
    network.stages.clear();
    network.input = dims;
    network.name = format!("vgg{depth}");
    if pooling == Pooling::Average {
        let plan = network.plan(1)?;
        for (layer, planned) in network.layers.iter_mut().zip(&plan) {
            if let LayerKind::MaxPool { .. } = layer.kind {
                layer.kind = LayerKind::AdaptiveAvgPool {
                    height: planned.output.height,
                    width: planned.output.width,
                };
            }
        }
    }
    Ok(network)
}

/// What the optimised image is asked to match, and how much each term weighs.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    /// Layers (this crate's names) whose features match the content image's.
    pub content_layers: Vec<String>,
    /// Layers whose features' Gram matrices match the style image's.
    pub style_layers: Vec<String>,
    /// The content term's weight.
    pub content_weight: f32,
    /// The style term's weight.
    pub style_weight: f32,
    /// The total variation term's weight (0: none).
    pub tv_weight: f32,
}

impl Objective {
    /// The plan indices of the content and style layers; fails for a layer the plan lacks or
    /// one named twice in a list.
    pub fn layer_indices(&self, plan: &[LayerPlan]) -> Result<(Vec<usize>, Vec<usize>)> {
        let find = |names: &[String], what: &str| -> Result<Vec<usize>> {
            let mut indices = Vec::new();
            for name in names {
                let i = (plan.iter())
                    .position(|l| l.layer.name == *name)
                    .ok_or_else(|| Error::InvalidArgument(format!("no {what} layer {name}")))?;
                if indices.contains(&i) {
                    return Err(Error::InvalidArgument(format!(
                        "{what} layer {name} is named twice"
                    )));
                }
                indices.push(i);
            }
            Ok(indices)
        };
        Ok((
            find(&self.content_layers, "content")?,
            find(&self.style_layers, "style")?,
        ))
    }

    /// Every layer either term reads, for [`feature_network`].
    pub fn layers(&self) -> Vec<String> {
        self.content_layers
            .iter()
            .chain(&self.style_layers)
            .cloned()
            .collect()
    }
}

/// FLOPs of one step (a multiply-add counting 2, as every count here): VGG's forward products,
/// as many again for the input gradient (the weights' gradients are not computed), and per
/// style layer the Gram matrix `F F^T` and the gradient `D F`, `2 C^2 H W` each.
pub fn step_flops(plan: &[LayerPlan], objective: &Objective) -> Result<u64> {
    let (_, style_layers) = objective.layer_indices(plan)?;
    let network = 2 * crate::model::total_flops_per_image(plan);
    let gram: u64 = (style_layers.iter())
        .map(|&i| {
            let d = plan[i].output;
            (4 * d.channels * d.channels * d.height * d.width) as u64
        })
        .sum();
    Ok(network + gram)
}

/// The three terms of the loss (each weighted).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LossTerms {
    /// The content term.
    pub content: f64,
    /// The style term.
    pub style: f64,
    /// The total variation term.
    pub tv: f64,
}

impl LossTerms {
    /// The loss: the three terms' sum.
    pub fn total(&self) -> f64 {
        self.content + self.style + self.tv
    }
}

/// An image in [0, 1] (`[3][H][W]`) normalised into a network input: `(x - mean) / std` per
/// channel.
pub fn normalize<T: Real>(image: &[T]) -> Vec<T> {
    let plane = image.len() / 3;
    image
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let c = (i / plane.max(1)).min(2);
            (x - T::from_f32(IMAGENET_MEAN[c])) / T::from_f32(IMAGENET_STD[c])
        })
        .collect()
}

/// What the content and style images give the objective: the content layers' features and the
/// style layers' Gram matrices, in the objective's orders.
#[derive(Clone, Debug)]
pub struct Targets<T> {
    /// Per content layer, the content image's features.
    pub content: Vec<Vec<T>>,
    /// Per style layer, the Gram matrix of the style image's features.
    pub style: Vec<Vec<T>>,
}

/// The CPU reference's targets: the content image through `content_plan`, the style image
/// through `style_plan` (the same layers at the style image's size).
pub fn reference_targets<T: Real>(
    (content_plan, style_plan): (&[LayerPlan], &[LayerPlan]),
    params: &Parameters<T>,
    objective: &Objective,
    (content_image, style_image): (&[T], &[T]),
) -> Result<Targets<T>> {
    let (content_layers, _) = objective.layer_indices(content_plan)?;
    let (_, style_layers) = objective.layer_indices(style_plan)?;
    let content_outputs = reference::forward(content_plan, params, &normalize(content_image))?;
    let style_outputs = reference::forward(style_plan, params, &normalize(style_image))?;
    let style = (style_layers.iter())
        .map(|&i| reference::gram(&style_outputs[i], style_plan[i].output.channels))
        .collect::<Result<_>>()?;
    Ok(Targets {
        content: content_layers
            .iter()
            .map(|&i| content_outputs[i].clone())
            .collect(),
        style,
    })
}

/// The CPU reference of the whole objective at `image` (`[3][H][W]` in [0, 1], the plan's
/// input): the three terms and the loss's gradient with respect to the image.
pub fn reference_objective<T: Real>(
    plan: &[LayerPlan],
    params: &Parameters<T>,
    objective: &Objective,
    targets: &Targets<T>,
    image: &[T],
) -> Result<(LossTerms, Vec<T>)> {
    let (content_layers, style_layers) = objective.layer_indices(plan)?;
    let input = normalize(image);
    let forward = reference::forward_training(plan, params, &input)?;
    let mut terms = LossTerms::default();
    let mut heads: Vec<(usize, Vec<T>)> = Vec::new();
    let weight = |w: f32| T::from_f32(w);
    for (&i, target) in content_layers.iter().zip(&targets.content) {
        let (loss, grad) = reference::mse(&forward.outputs[i], target)?;
        terms.content += (loss * weight(objective.content_weight))
            .to_f64()
            .unwrap_or(f64::NAN);
        let grad = grad
            .into_iter()
            .map(|g| g * weight(objective.content_weight));
        heads.push((i, grad.collect()));
    }
    for (&i, target) in style_layers.iter().zip(&targets.style) {
        let channels = plan[i].output.channels;
        let features = &forward.outputs[i];
        let (loss, grad_gram) = reference::mse(&reference::gram(features, channels)?, target)?;
        terms.style += (loss * weight(objective.style_weight))
            .to_f64()
            .unwrap_or(f64::NAN);
        let grad_gram: Vec<T> = (grad_gram.into_iter())
            .map(|g| g * weight(objective.style_weight))
            .collect();
        heads.push((i, reference::gram_backward(features, channels, &grad_gram)?));
    }
    let (_, grad_input) = reference::backward_to_input(plan, params, &input, &forward, &heads)?;
    let dims = plan[0].input;
    let (tv, tv_grad) = reference::total_variation(image, dims)?;
    terms.tv = (tv * weight(objective.tv_weight))
        .to_f64()
        .unwrap_or(f64::NAN);
    let plane = dims.height * dims.width;
    let grad = (grad_input.iter().zip(&tv_grad).enumerate())
        .map(|(i, (&g, &t))| {
            let c = (i / plane.max(1)).min(2);
            g / T::from_f32(IMAGENET_STD[c]) + weight(objective.tv_weight) * t
        })
        .collect();
    Ok((terms, grad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gatys_names_map_to_torchvision_indices() {
        let vgg19 = vgg(19).unwrap();
        let resolve = |name: &str| resolve_layer(&vgg19, name).unwrap();
        assert_eq!(resolve("conv1_1"), "features.0");
        assert_eq!(resolve("conv4_2"), "features.21");
        assert_eq!(resolve("relu4_2"), "features.21");
        assert_eq!(resolve("features.22"), "features.21");
        assert_eq!(resolve("conv5_1"), "features.28");
        let vgg16 = vgg(16).unwrap();
        assert_eq!(resolve_layer(&vgg16, "conv4_2").unwrap(), "features.19");
        assert_eq!(resolve_layer(&vgg16, "conv5_1").unwrap(), "features.24");
        let err = resolve_layer(&vgg16, "conv5_4").unwrap_err().to_string();
        assert!(err.contains("conv5_3"), "{err}");
    }

    #[test]
    fn the_feature_network_stops_at_the_deepest_layer_and_pools_as_asked() {
        let dims = Dims {
            channels: 3,
            height: 37,
            width: 50,
        };
        let needed = vec!["features.0".to_string(), "features.21".to_string()];
        let net = feature_network(19, Pooling::Average, dims, &needed).unwrap();
        assert_eq!(net.layers.last().unwrap().name, "features.21");
        let plan = net.plan(1).unwrap();
        let pools: Vec<_> = (plan.iter())
            .filter(|l| matches!(l.layer.kind, LayerKind::AdaptiveAvgPool { .. }))
            .map(|l| (l.output.height, l.output.width))
            .collect();
        assert_eq!(pools, [(18, 25), (9, 12), (4, 6)]);
        let max = feature_network(19, Pooling::Max, dims, &needed).unwrap();
        let max_plan = max.plan(1).unwrap();
        assert_eq!(max_plan.last().unwrap().output, plan.last().unwrap().output);
    }
}
