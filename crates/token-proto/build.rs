//! Compiles `proto/` with the vendored protoc, so a fresh machine needs no system protoc, and
//! writes the file descriptor set that the reflection service serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        proto_root.join("tokens/v1/tokens.proto"),
        // Only for reflection: lets grpcurl decode the error details we send.
        proto_root.join("google/rpc/error_details.proto"),
    ];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The protos live outside this package, where cargo does not look for changes by itself:
    // without this, an edited contract keeps compiling against the previous generated code.
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("tokens_v1_descriptor.bin"))
        .compile_with_config(
            config,
            &protos,
            // The well-known types (Timestamp, Duration) ship with the vendored protoc.
            &[proto_root, protoc_bin_vendored::include_path()?],
        )?;
    Ok(())
}
