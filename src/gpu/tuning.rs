//! Measured per-layer kernel choices: which algorithm and kernel shape computes each
//! convolution, and which kernel each fully connected layer's forward product, as `convnet
//! tune` measured them on an adapter (`crate::tune`), and the cache file that keeps them between
//! runs.
//!
//! A context holds a [`Tuning`] (empty unless given one); a convolution looks its layer up by
//! [`conv_key`] and the pass it is built for, a fully connected layer by [`linear_key`]. What a
//! flag forces wins over the tuning, and the tuning over the adapter's heuristic
//! (`gpu::ops::conv`, `gpu::ops::linear`). The cache is one JSON file of [`CacheEntry`]s and
//! [`LinearEntry`]s for any number of adapters; a context takes only those of its own adapter,
//! backend and driver version, so a driver update makes the old entries stale (ignored, kept in
//! the file). A file that does not parse, or entries that name no real choice, are ignored with
//! a warning, never trusted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::variants::{ConvAlgorithm, KernelShape, LinearKernel};
use crate::model::{LayerKind, LayerPlan};

/// The cache file's format; a file of another version is ignored.
const SCHEMA_VERSION: u32 = 1;

/// Which pass a choice is for: a network built for inference runs the forward alone, one built
/// with gradients also the backward, whose kernels the choice sets too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunedPass {
    /// The forward pass alone.
    Inference,
    /// The forward and backward passes.
    Training,
}

/// How one convolution is computed: an algorithm and a kernel shape, neither `Auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvChoice {
    /// Direct, or Winograd where the layer allows it.
    pub algorithm: ConvAlgorithm,
    /// Register blocks or workgroup tiles.
    pub kernel: KernelShape,
}

impl ConvChoice {
    /// Whether both halves name a real choice (a cache file could hold `auto`).
    fn is_definite(&self) -> bool {
        self.algorithm != ConvAlgorithm::Auto && self.kernel != KernelShape::Auto
    }
}

impl std::fmt::Display for ConvChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithm = match self.algorithm {
            ConvAlgorithm::Winograd2 => "winograd2",
            ConvAlgorithm::Winograd4 => "winograd4",
            _ => "direct",
        };
        let kernel = match self.kernel {
            KernelShape::WorkgroupTile => "workgroup-tile",
            _ => "register-block",
        };
        write!(f, "{algorithm} {kernel}")
    }
}

/// Where a built layer's [`ConvChoice`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChoiceSource {
    /// The context's tuning set it (or part of it).
    Tuned,
    /// A flag forced it (or part of it), and the tuning had none.
    Forced,
    /// The adapter's heuristic.
    Heuristic,
}

/// How one convolution of a built network computes, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerChoice {
    /// What its forward runs (its input gradient may stay direct where Winograd's transforms
    /// do not fit a binding).
    pub choice: ConvChoice,
    /// Where that came from.
    pub source: ChoiceSource,
}

impl std::fmt::Display for ChoiceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChoiceSource::Tuned => "tuned",
            ChoiceSource::Forced => "forced",
            ChoiceSource::Heuristic => "heuristic",
        })
    }
}

impl std::fmt::Display for LayerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {}", self.choice, self.source)
    }
}

/// The key a convolution is tuned and looked up by: everything that sets its kernels' work
/// (batch, input, output channels, window, stride, padding, groups), nothing of its name or
/// place in the network. `None` for a layer that is not a convolution.
pub fn conv_key(layer: &LayerPlan) -> Option<String> {
    let LayerKind::Conv2d {
        out_channels,
        window,
        groups,
        ..
    } = layer.layer.kind
    else {
        return None;
    };
    let (input, pad) = (layer.input, layer.pad);
    Some(format!(
        "conv batch {} input {}x{}x{} out {} kernel {}x{} stride {}x{} pad {},{},{},{} groups {}",
        layer.batch,
        input.channels,
        input.height,
        input.width,
        out_channels,
        window.height,
        window.width,
        window.stride_height,
        window.stride_width,
        pad.top,
        pad.bottom,
        pad.left,
        pad.right,
        groups
    ))
}

/// The key a fully connected layer is tuned and looked up by: its batch and its input and output
/// features. `None` for a layer that is not fully connected.
pub fn linear_key(layer: &LayerPlan) -> Option<String> {
    let LayerKind::Linear { out_features, .. } = layer.layer.kind else {
        return None;
    };
    Some(format!(
        "linear batch {} in {} out {out_features}",
        layer.batch,
        layer.input.len()
    ))
}

/// How one fully connected layer of a built network computes its forward product, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearLayerChoice {
    /// The kernel (resolved: never `Auto`).
    pub kernel: LinearKernel,
    /// Where it came from.
    pub source: ChoiceSource,
}

impl std::fmt::Display for LinearLayerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {}", self.kernel, self.source)
    }
}

/// One measured fully connected layer in the cache file: the forward kernel that was fastest
/// (the backward's kernels do not depend on it, so one choice serves both passes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearEntry {
    /// The adapter's name, as wgpu reports it.
    pub adapter: String,
    /// Its backend.
    pub backend: String,
    /// Its driver and version ([`driver_of`]).
    pub driver: String,
    /// The layer's [`linear_key`].
    pub layer: String,
    /// The fastest candidate that matched the CPU reference.
    pub kernel: LinearKernel,
    /// Every candidate measured, as (kernel, forward seconds), for the record.
    pub seconds: Vec<(String, f64)>,
}

impl LinearEntry {
    fn is_for(&self, info: &wgpu::AdapterInfo) -> bool {
        is_for((&self.adapter, &self.backend, &self.driver), info)
    }
}

/// One measured choice in the cache file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The adapter's name, as wgpu reports it.
    pub adapter: String,
    /// Its backend (`Vulkan`, `Metal`, ...).
    pub backend: String,
    /// Its driver and version ([`driver_of`]).
    pub driver: String,
    /// The layer's [`conv_key`].
    pub layer: String,
    /// The pass the choice is for.
    pub pass: TunedPass,
    /// The fastest candidate that matched the CPU reference.
    pub choice: ConvChoice,
    /// Every candidate measured, as (choice, seconds of the pass's share of the layer), for the
    /// record.
    pub seconds: Vec<(String, f64)>,
}

impl CacheEntry {
    fn is_for(&self, info: &wgpu::AdapterInfo) -> bool {
        is_for((&self.adapter, &self.backend, &self.driver), info)
    }
}

/// Whether an entry of this adapter, backend and driver was measured on `info`'s.
fn is_for((adapter, backend, driver): (&str, &str, &str), info: &wgpu::AdapterInfo) -> bool {
    adapter == info.name && backend == format!("{:?}", info.backend) && driver == driver_of(info)
}

/// The driver and its version, as one string (what makes an entry stale when it changes).
pub fn driver_of(info: &wgpu::AdapterInfo) -> String {
    format!("{} {}", info.driver, info.driver_info)
}

/// What a cache file holds. A file written before fully connected layers were tuned has no
/// `linear` list (read as empty); a program of that time ignores the list.
#[derive(Default, Serialize, Deserialize)]
pub struct Cache {
    /// The convolutions' choices.
    pub entries: Vec<CacheEntry>,
    /// The fully connected layers' choices.
    #[serde(default)]
    pub linear: Vec<LinearEntry>,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    schema_version: u32,
    #[serde(flatten)]
    cache: Cache,
}

/// The measured choices one context uses.
#[derive(Clone, Debug, Default)]
pub struct Tuning {
    choices: HashMap<(String, TunedPass), ConvChoice>,
    linear: HashMap<String, LinearKernel>,
    /// The file they came from.
    source: Option<PathBuf>,
}

impl Tuning {
    /// The measured choice for the convolution `layer` in `pass`, if one was measured.
    pub fn conv_choice(&self, layer: &LayerPlan, pass: TunedPass) -> Option<ConvChoice> {
        let key = conv_key(layer)?;
        self.choices.get(&(key, pass)).copied()
    }

    /// The measured forward kernel of the fully connected `layer`, if one was measured.
    pub fn linear_kernel(&self, layer: &LayerPlan) -> Option<LinearKernel> {
        self.linear.get(&linear_key(layer)?).copied()
    }

    /// How many convolution (layer, pass) choices it holds.
    pub fn len(&self) -> usize {
        self.choices.len()
    }

    /// How many fully connected layer shapes it holds a kernel for.
    pub fn linear_len(&self) -> usize {
        self.linear.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.choices.is_empty() && self.linear.is_empty()
    }

    /// The cache file it was read from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
}

/// Where the cache lives unless a path is given: `convnet-wgpu/tune.json` in the user's cache
/// directory (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS,
/// `%LOCALAPPDATA%` on Windows). `None` where the platform has none.
pub fn default_cache_path() -> Option<PathBuf> {
    dirs::cache_dir().map(|dir| dir.join("convnet-wgpu").join("tune.json"))
}

/// Every entry of the cache file at `path`: empty where there is no file. A file that cannot be
/// read or parsed, or of another format version, is an error (the caller decides whether to
/// warn and go on).
pub fn read_cache(path: &Path) -> Result<Cache> {
    if !path.exists() {
        return Ok(Cache::default());
    }
    let bytes = crate::files::read(path)?;
    let file: CacheFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::file(path, format!("not a tune cache: {e}")))?;
    if file.schema_version != SCHEMA_VERSION {
        return Err(Error::file(
            path,
            format!(
                "a tune cache of format version {} (this program reads {SCHEMA_VERSION})",
                file.schema_version
            ),
        ));
    }
    Ok(file.cache)
}

/// The choices of the cache at `path` for the adapter `info`, and a warning for what had to be
/// ignored: the whole file where it is unreadable, or the entries that name no real choice.
pub fn load(path: &Path, info: &wgpu::AdapterInfo) -> (Tuning, Option<String>) {
    let cache = match read_cache(path) {
        Ok(cache) => cache,
        Err(e) => return (Tuning::default(), Some(format!("{e}; ignored"))),
    };
    let mut tuning = Tuning {
        choices: HashMap::new(),
        linear: HashMap::new(),
        source: Some(path.to_path_buf()),
    };
    let mut ignored = 0;
    for entry in cache.linear.into_iter().filter(|e| e.is_for(info)) {
        match entry.kernel.is_definite() {
            true => drop(tuning.linear.insert(entry.layer, entry.kernel)),
            false => ignored += 1,
        }
    }
    for entry in cache.entries.into_iter().filter(|e| e.is_for(info)) {
        if entry.choice.is_definite() {
            tuning
                .choices
                .insert((entry.layer, entry.pass), entry.choice);
        } else {
            ignored += 1;
        }
    }
    let warning = (ignored > 0).then(|| {
        format!(
            "{}: {ignored} entries name no definite choice; ignored",
            path.display()
        )
    });
    (tuning, warning)
}

/// Writes a tune of `layers` (their [`conv_key`]s and [`linear_key`]s) on the adapter `info`
/// into the cache at `path`: every old entry of that adapter and driver for those layers goes
/// (also where the new tune found no winner), `measured` is added, and every other entry is
/// kept. Written whole or not at all; an unreadable old cache is replaced (the caller may warn
/// first).
pub fn store(
    path: &Path,
    info: &wgpu::AdapterInfo,
    layers: &[String],
    measured: &Cache,
) -> Result<()> {
    let mut cache = read_cache(path).unwrap_or_default();
    (cache.entries).retain(|old| !(old.is_for(info) && layers.contains(&old.layer)));
    (cache.linear).retain(|old| !(old.is_for(info) && layers.contains(&old.layer)));
    cache.entries.extend(measured.entries.iter().cloned());
    cache.linear.extend(measured.linear.iter().cloned());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::file(dir, format!("cannot create the directory: {e}")))?;
    }
    let file = CacheFile {
        schema_version: SCHEMA_VERSION,
        cache,
    };
    let json = serde_json::to_vec_pretty(&file)
        .map_err(|e| Error::Internal(format!("tune cache: {e}")))?;
    crate::files::write_atomically(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, driver_info: &str) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            name: name.into(),
            driver: "llvmpipe".into(),
            driver_info: driver_info.into(),
            ..wgpu::AdapterInfo::new(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan)
        }
    }

    fn entry(adapter: &wgpu::AdapterInfo, layer: &str, algorithm: ConvAlgorithm) -> CacheEntry {
        CacheEntry {
            adapter: adapter.name.clone(),
            backend: format!("{:?}", adapter.backend),
            driver: driver_of(adapter),
            layer: layer.into(),
            pass: TunedPass::Training,
            choice: ConvChoice {
                algorithm,
                kernel: KernelShape::RegisterBlock,
            },
            seconds: vec![("direct register-block".into(), 1.0)],
        }
    }

    fn convs(entries: Vec<CacheEntry>) -> Cache {
        Cache {
            entries,
            linear: Vec::new(),
        }
    }

    fn linear(adapter: &wgpu::AdapterInfo, layer: &str, kernel: LinearKernel) -> LinearEntry {
        LinearEntry {
            adapter: adapter.name.clone(),
            backend: format!("{:?}", adapter.backend),
            driver: driver_of(adapter),
            layer: layer.into(),
            kernel,
            seconds: vec![("block16".into(), 1.0)],
        }
    }

    #[test]
    fn fully_connected_choices_round_trip_beside_the_convolutions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tune.json");
        let this = info("a", "Mesa 25");
        let split = LinearKernel::SmallBatch { chunks: 4 };
        let measured = Cache {
            entries: vec![entry(&this, "x", ConvAlgorithm::Direct)],
            linear: vec![
                linear(&this, "fc", split),
                linear(&this, "auto", LinearKernel::Auto),
            ],
        };
        let layers = ["x", "fc", "auto"].map(String::from);
        store(&path, &this, &layers, &measured).unwrap();
        let (tuning, warning) = load(&path, &this);
        assert_eq!((tuning.len(), tuning.linear_len()), (1, 1));
        assert_eq!(tuning.linear["fc"], split);
        assert!(
            warning.unwrap().contains("1 entries"),
            "auto names no kernel"
        );
        // A re-tune of "fc" replaces its entry; a file without the linear list still reads.
        store(&path, &this, &layers[1..2], &Cache::default()).unwrap();
        assert_eq!(load(&path, &this).0.linear_len(), 0);
        std::fs::write(&path, r#"{"schema_version": 1, "entries": []}"#).unwrap();
        assert!(read_cache(&path).unwrap().linear.is_empty());
    }

    #[test]
    fn a_cache_keeps_other_adapters_and_replaces_its_own_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("tune.json");
        let (this, other) = (info("a", "Mesa 25"), info("b", "Mesa 25"));
        let x = ["x".to_string()];
        store(
            &path,
            &this,
            &x,
            &convs(vec![entry(&this, "x", ConvAlgorithm::Direct)]),
        )
        .unwrap();
        store(
            &path,
            &other,
            &x,
            &convs(vec![entry(&other, "x", ConvAlgorithm::Direct)]),
        )
        .unwrap();
        store(
            &path,
            &this,
            &x,
            &convs(vec![entry(&this, "x", ConvAlgorithm::Winograd2)]),
        )
        .unwrap();
        assert_eq!(read_cache(&path).unwrap().entries.len(), 2);
        let (tuning, warning) = load(&path, &this);
        assert!(warning.is_none());
        assert_eq!(tuning.len(), 1);
        assert_eq!(
            tuning.choices[&("x".to_string(), TunedPass::Training)].algorithm,
            ConvAlgorithm::Winograd2
        );
        // A driver update makes the entries stale.
        assert!(load(&path, &info("a", "Mesa 26")).0.is_empty());
        // A tune of "x" that found no winner drops the old choice.
        store(&path, &this, &x, &Cache::default()).unwrap();
        assert!(load(&path, &this).0.is_empty());
        assert_eq!(load(&path, &other).0.len(), 1);
    }

    #[test]
    fn a_corrupt_or_foreign_cache_is_ignored_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tune.json");
        let this = info("a", "Mesa 25");
        for bad in [
            "{ not json",
            r#"{"schema_version": 99, "entries": []}"#,
            r#"{"schema_version": 1, "entries": [{"adapter": "a"}]}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let (tuning, warning) = load(&path, &this);
            assert!(tuning.is_empty(), "{bad}");
            assert!(warning.unwrap().contains("ignored"), "{bad}");
        }
        let mut auto = entry(&this, "x", ConvAlgorithm::Auto);
        auto.choice.kernel = KernelShape::Auto;
        store(&path, &this, &["x".to_string()], &convs(vec![auto])).unwrap();
        let (tuning, warning) = load(&path, &this);
        assert!(tuning.is_empty());
        assert!(warning.unwrap().contains("1 entries"));
        // No file: nothing to use, nothing to warn about.
        let (tuning, warning) = load(&dir.path().join("none.json"), &this);
        assert!(tuning.is_empty() && warning.is_none());
    }
}
