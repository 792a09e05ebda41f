//! Every WGSL file parses and validates with naga, with no adapter needed.

use convnet_wgpu::shaders::ALL;

#[test]
fn every_shader_parses_and_validates() {
    assert!(!ALL.is_empty());
    for shader in ALL {
        let module = naga::front::wgsl::parse_str(shader.source)
            .unwrap_or_else(|e| panic!("{}: {}", shader.file, e.emit_to_string(shader.source)));
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
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            ALL.iter().any(|s| s.file == name),
            "shaders/{name} is not listed in src/shaders.rs"
        );
    }
}
