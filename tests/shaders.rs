//! Every kernel's WGSL, as the host assembles it (prelude, shared snippets, file), parses and
//! validates with naga, with no adapter needed.

use convnet_wgpu::shaders::{Element, Elements, ShaderSource, ALL};

#[test]
fn every_shader_parses_and_validates() {
    assert!(!ALL.is_empty());
    for shader in ALL {
        let wgsl = shader.wgsl();
        let module = naga::front::wgsl::parse_str(&wgsl)
            .unwrap_or_else(|e| panic!("{}: {}", shader.file, e.emit_to_string(&wgsl)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {e:?}", shader.file));
        assert!(
            module
                .entry_points
                .iter()
                .any(|ep| ep.name == shader.entry_point && ep.stage == naga::ShaderStage::Compute),
            "{} has no compute entry point {}",
            shader.file,
            shader.entry_point
        );
    }
}

#[test]
fn every_file_in_shaders_is_registered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            continue;
        }
        let name = entry.file_name().into_string().unwrap();
        assert!(
            ALL.iter().any(|s| s.file == name),
            "shaders/{name} is not listed in src/shaders.rs"
        );
    }
}

#[test]
fn every_shared_snippet_is_used() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/common");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            ALL.iter().any(|s| s.snippets.contains(&name.as_str())),
            "shaders/common/{name} is not used by any kernel"
        );
    }
}

/// The override constants the host sets on `module`'s kernel (the workgroup size on software
/// adapters and GPUs; AlexNet's pooling window and LRN), as it resolves them before compiling:
/// every override a kernel declares without a default gets a value here.
fn overrides(module: &naga::Module, workgroup_size: f64) -> naga::back::PipelineConstants {
    let declared: Vec<&str> = (module.overrides.iter())
        .filter_map(|(_, o)| o.name.as_deref())
        .collect();
    let mut constants = naga::back::PipelineConstants::default();
    for (name, value) in [
        ("WORKGROUP_SIZE", workgroup_size),
        ("WINDOW_HEIGHT", 3.0),
        ("WINDOW_WIDTH", 3.0),
        ("STRIDE_HEIGHT", 2.0),
        ("STRIDE_WIDTH", 2.0),
        ("DEPTH_RADIUS", 5.0),
        ("BETA", 0.75),
    ] {
        if declared.contains(&name) {
            constants.insert(name.to_string(), value);
        }
    }
    constants
}

/// Every kernel translates to what wgpu hands each backend: SPIR-V (Vulkan), MSL (Metal) and
/// HLSL (DX12), with its override constants resolved as the host resolves them, so that a
/// kernel that only Vulkan or GL could run is caught without a Mac or a Windows machine. The
/// SPIR-V is written to `target/tmp/spirv/` for `.ci/run` to check with Khronos' `spirv-val`.
#[test]
fn every_shader_translates_to_spirv_msl_and_hlsl() {
    let out = concat!(env!("CARGO_TARGET_TMPDIR"), "/spirv");
    // Only this run's modules: none left from a kernel renamed since.
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    for shader in ALL {
        translate(shader, Elements::F32, out);
    }
}

/// The element types a forward kernel is compiled with under `--precision f16`: its input and
/// weights f16 (written as such, or as f32 scratch: Winograd's input and filter transforms,
/// split-K's partial sums), or f32 scratch read into an f16 output.
const F16_ELEMENTS: [Elements; 3] = [
    Elements::both(Element::F16),
    Elements {
        read: Element::F16,
        written: Element::F32,
    },
    Elements {
        read: Element::F32,
        written: Element::F16,
    },
];

/// Every kernel that declares its tensors with the element aliases validates and translates to
/// all three backends with f16 tensors too (DX12 needs shader model 6.2 for them), and their
/// SPIR-V goes to `spirv-val` beside the f32 modules. At least the forward kernels of every op
/// do: a kernel that forgot the aliases would read f16 buffers as f32.
#[test]
fn every_f16_capable_shader_translates_with_f16_tensors() {
    let out = concat!(env!("CARGO_TARGET_TMPDIR"), "/spirv-f16");
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let capable: Vec<_> = ALL.iter().filter(|s| s.stores_elements()).collect();
    for name in [
        "conv2d_forward",
        "conv2d_forward_1x1",
        "conv2d_forward_tiled",
        "conv2d_pad_input",
        "winograd_filter",
        "winograd_input",
        "winograd_output",
        "winograd4_filter",
        "winograd4_input",
        "winograd4_output",
        "winograd5_filter",
        "winograd5_input",
        "winograd5_output",
        "gemm",
        "gemm_small_batch",
        "gemm_split_k_reduce",
        "lrn_forward",
        "max_pool_forward",
        "adaptive_avg_pool_forward",
        "batch_norm_forward",
        "add_forward",
        "add_forward_by_four",
        "concat_forward",
        "concat_forward_by_four",
    ] {
        assert!(
            capable.iter().any(|s| s.name == name),
            "{name} does not declare its tensors with InElement / OutElement"
        );
    }
    for shader in capable {
        for elements in F16_ELEMENTS {
            translate(shader, elements, out);
        }
    }
}

/// Validates `shader` compiled for `elements` and translates it to SPIR-V (written to `out`),
/// MSL and HLSL at both workgroup sizes.
fn translate(shader: &ShaderSource, elements: Elements, out: &str) {
    let f16 = elements != Elements::F32;
    let wgsl = shader.wgsl_with(elements);
    let module = naga::front::wgsl::parse_str(&wgsl)
        .unwrap_or_else(|e| panic!("{} {elements:?}: {}", shader.name, e.emit_to_string(&wgsl)));
    let capabilities = match f16 {
        true => naga::valid::Capabilities::SHADER_FLOAT16,
        false => naga::valid::Capabilities::empty(),
    };
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{} {elements:?}: {e:?}", shader.name));
    let suffix = match (elements.read, elements.written) {
        (Element::F32, Element::F32) => String::new(),
        (read, written) => format!("_{}_{}", read.wgsl(), written.wgsl()),
    };
    for workgroup_size in [16.0, 64.0] {
        let entry = (naga::ShaderStage::Compute, shader.entry_point);
        let constants = overrides(&module, workgroup_size);
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some(entry),
            &constants,
        )
        .unwrap_or_else(|e| panic!("{}: overrides: {e}", shader.entry_point));
        let what = format!("{}{suffix} (workgroup size {workgroup_size})", shader.name);

        let spv_pipeline = naga::back::spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: shader.entry_point.to_string(),
        };
        let spirv = naga::back::spv::write_vec(
            &module,
            &info,
            &naga::back::spv::Options::default(),
            Some(&spv_pipeline),
        )
        .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
        let bytes: Vec<u8> = spirv.iter().flat_map(|w| w.to_le_bytes()).collect();
        let path = format!("{out}/{}{suffix}_{workgroup_size}.spv", shader.name);
        std::fs::write(path, bytes).unwrap();

        let msl_options = naga::back::msl::Options {
            lang_version: (2, 1),
            ..Default::default()
        };
        let msl_pipeline = naga::back::msl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, shader.entry_point.to_string())),
            ..Default::default()
        };
        let (msl, _) = naga::back::msl::write_string(&module, &info, &msl_options, &msl_pipeline)
            .unwrap_or_else(|e| panic!("{what}: MSL: {e}"));
        assert!(msl.contains("kernel void"), "{what}: no MSL kernel");

        let hlsl_options = naga::back::hlsl::Options {
            fake_missing_bindings: true,
            shader_model: match f16 {
                true => naga::back::hlsl::ShaderModel::V6_2,
                false => naga::back::hlsl::Options::default().shader_model,
            },
            ..Default::default()
        };
        let hlsl_pipeline = naga::back::hlsl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, shader.entry_point.to_string())),
        };
        let mut hlsl = String::new();
        naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_options, &hlsl_pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{what}: HLSL: {e}"));
        assert!(
            hlsl.contains("[numthreads("),
            "{what}: no HLSL compute shader"
        );
    }
}
