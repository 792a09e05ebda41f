//! Every kernel's WGSL, as the host assembles it (prelude, shared snippets, file), parses and
//! validates with naga, with no adapter needed.

use convnet_wgpu::shaders::ALL;

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
        let wgsl = shader.wgsl();
        let module = naga::front::wgsl::parse_str(&wgsl).unwrap();
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap();
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
            let what = format!("{} (workgroup size {workgroup_size})", shader.name);

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
            let path = format!("{out}/{}_{workgroup_size}.spv", shader.name);
            std::fs::write(path, bytes).unwrap();

            let msl_options = naga::back::msl::Options {
                lang_version: (2, 1),
                ..Default::default()
            };
            let msl_pipeline = naga::back::msl::PipelineOptions {
                entry_point: Some((naga::ShaderStage::Compute, shader.entry_point.to_string())),
                ..Default::default()
            };
            let (msl, _) =
                naga::back::msl::write_string(&module, &info, &msl_options, &msl_pipeline)
                    .unwrap_or_else(|e| panic!("{what}: MSL: {e}"));
            assert!(msl.contains("kernel void"), "{what}: no MSL kernel");

            let hlsl_options = naga::back::hlsl::Options {
                fake_missing_bindings: true,
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
}
