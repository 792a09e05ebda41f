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
