//! The networks the command line knows by name, and what a user may change about them.

use crate::error::{Error, Result};

use super::{alexnet, alexnet_2gpu, googlenet, resnet, vgg, Dims, LayerKind, Network};

/// What a user may change about a known network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Outputs of the last fully connected layer (and of GoogLeNet's auxiliary heads); default
    /// 1000, ImageNet's classes.
    pub num_classes: Option<usize>,
    /// Height and width of the (square) input images; default 224.
    pub input_size: Option<usize>,
    /// GoogLeNet only: include its two auxiliary classifiers.
    pub aux_logits: bool,
}

/// ImageNet's images as the networks take them: 3 x 224 x 224.
pub(crate) const IMAGENET_INPUT: Dims = Dims {
    channels: 3,
    height: 224,
    width: 224,
};

/// ImageNet's class count, every network's default head.
pub const IMAGENET_CLASSES: usize = 1000;

/// The networks the command line knows, by name, at their default settings.
pub fn by_name(name: &str) -> Result<Network> {
    build(name, &Options::default())
}

/// A known network with `options` applied.
pub fn build(name: &str, options: &Options) -> Result<Network> {
    let classes = options.num_classes.unwrap_or(IMAGENET_CLASSES);
    if classes == 0 {
        return Err(Error::InvalidArgument(
            "--num-classes must be at least 1".into(),
        ));
    }
    if options.input_size == Some(0) {
        return Err(Error::InvalidArgument(
            "--input-size must be at least 1".into(),
        ));
    }
    if options.aux_logits && name != "googlenet" {
        return Err(Error::InvalidArgument(format!(
            "--aux-logits applies to googlenet only, not {name}"
        )));
    }
    let mut network = match name {
        "alexnet" => alexnet(),
        "alexnet-2gpu" => alexnet_2gpu(),
        "vgg11" => vgg(11)?,
        "vgg13" => vgg(13)?,
        "vgg16" => vgg(16)?,
        "vgg19" => vgg(19)?,
        "googlenet" => googlenet(options.aux_logits),
        "resnet18" => resnet(18)?,
        "resnet34" => resnet(34)?,
        "resnet50" => resnet(50)?,
        "resnet101" => resnet(101)?,
        "resnet152" => resnet(152)?,
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown model '{other}'; known models: {}",
                MODEL_NAMES.join(", ")
            )))
        }
    };
    if let Some(size) = options.input_size {
        network.input.height = size;
        network.input.width = size;
    }
    network.set_classes(classes);
    Ok(network)
}

impl Network {
    /// Sets the outputs of every classifier: the last layer, and the other fully connected layers
    /// whose output nobody reads (GoogLeNet's auxiliary heads).
    fn set_classes(&mut self, classes: usize) {
        let read: std::collections::HashSet<&str> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                let previous =
                    (i > 0 && l.inputs.is_empty()).then(|| self.layers[i - 1].name.as_str());
                l.inputs.iter().map(String::as_str).chain(previous)
            })
            .collect();
        let heads: Vec<usize> = (0..self.layers.len())
            .filter(|&i| {
                matches!(self.layers[i].kind, LayerKind::Linear { .. })
                    && !read.contains(self.layers[i].name.as_str())
            })
            .collect();
        for i in heads {
            if let LayerKind::Linear { out_features, .. } = &mut self.layers[i].kind {
                *out_features = classes;
            }
        }
    }
}

/// Names accepted by [`by_name`].
pub const MODEL_NAMES: &[&str] = &[
    "alexnet",
    "alexnet-2gpu",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
];
