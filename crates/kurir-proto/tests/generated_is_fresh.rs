//! The generated code in `src/gen/` must be what `proto/` compiles to.
//!
//! This test is also the generator: it compiles every `.proto` file under the repository's
//! `proto/` with pure-Rust tools (protox parses the files into a `FileDescriptorSet`,
//! prost-build turns that into Rust), so no `protoc` and no build script are needed. After
//! editing a `.proto` file, regenerate with
//!
//! ```text
//! KURIR_REGENERATE_PROTO=1 cargo test -p kurir-proto --test generated_is_fresh
//! ```
//!
//! and commit the result. Without the variable the test only compares, and fails when the
//! checked-in code is stale.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The encoded `FileDescriptorSet` of `proto/`, checked in next to the code.
const DESCRIPTOR_FILE: &str = "kurir.v1.bin";

/// Set to write the generated code into `src/gen/` instead of comparing.
const REGENERATE_ENV: &str = "KURIR_REGENERATE_PROTO";
const REGENERATE_COMMAND: &str =
    "KURIR_REGENERATE_PROTO=1 cargo test -p kurir-proto --test generated_is_fresh";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The include root of the `.proto` files: imports are written relative to it
/// (`import "kurir/v1/queue.proto";`).
fn proto_root() -> PathBuf {
    crate_dir().join("../../proto")
}

/// Where the generated code is checked in (one file per protobuf package, e.g.
/// `kurir.v1.rs`, each included from `src/lib.rs`).
fn gen_dir() -> PathBuf {
    crate_dir().join("src/gen")
}

/// Every `.proto` file under `root`, relative to it, sorted so output is deterministic.
fn proto_files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                out.push(path.strip_prefix(root).expect("under root").to_owned());
            }
        }
    }
    let mut files = Vec::new();
    walk(root, root, &mut files);
    files.sort();
    files
}

/// The code generator's settings: the one place that decides how protobuf types map to Rust.
fn prost_config(out_dir: &Path) -> prost_build::Config {
    let mut config = prost_build::Config::new();
    config
        .out_dir(out_dir)
        // Message bodies are large: decoding from a `Bytes` buffer then shares it, no copy.
        .bytes([".kurir.v1.QueuedMessage.body"])
        // Ordered maps encode deterministically, so equal records are equal bytes.
        .btree_map(["."]);
    config
}

/// Compiles `proto/` into `out_dir`.
///
/// Messages come from prost-build (configured by [`prost_config`]), the gRPC clients and
/// servers from tonic-prost-build, and the encoded descriptor set is written next to them.
fn generate(out_dir: &Path) {
    let root = proto_root();
    let files = proto_files(&root);
    assert!(
        !files.is_empty(),
        "no .proto files under {}",
        root.display()
    );
    let fds = protox::compile(&files, [&root]).unwrap_or_else(|e| panic!("protox: {e:?}"));
    // The descriptor set, for gRPC server reflection (`v1::FILE_DESCRIPTOR_SET`).
    let descriptor = prost::Message::encode_to_vec(&fds);
    fs::write(out_dir.join(DESCRIPTOR_FILE), descriptor).expect("write the descriptor set");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out_dir)
        .compile_fds_with_config(fds, prost_config(out_dir))
        .unwrap_or_else(|e| panic!("tonic-prost-build: {e}"));
}

/// The generated files of `dir` (`.rs` and the descriptor set) by name.
fn rust_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "rs")
                || path.file_name().is_some_and(|n| n == DESCRIPTOR_FILE)
        })
        .map(|path| {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let text = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (name, text)
        })
        .collect()
}

/// Where two versions of a file first differ, for the failure message.
fn first_difference(expected: &str, actual: &str) -> String {
    let line = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
    format!(
        "first difference at line {}:\n  generated:  {:?}\n  checked in: {:?}",
        line + 1,
        expected.lines().nth(line).unwrap_or("<end of file>"),
        actual.lines().nth(line).unwrap_or("<end of file>"),
    )
}

#[test]
fn generated_code_is_fresh() {
    let out = tempfile::tempdir().expect("temp dir");
    generate(out.path());
    let generated = rust_files(out.path());
    let gen_dir = gen_dir();

    if std::env::var_os(REGENERATE_ENV).is_some() {
        fs::create_dir_all(&gen_dir).expect("create src/gen");
        for stale in rust_files(&gen_dir)
            .keys()
            .filter(|n| !generated.contains_key(*n))
        {
            fs::remove_file(gen_dir.join(stale)).expect("remove stale generated file");
        }
        for (name, text) in &generated {
            fs::write(gen_dir.join(name), text).expect("write generated file");
        }
        return;
    }

    let checked_in = rust_files(&gen_dir);
    let mut problems = Vec::new();
    for (name, text) in &generated {
        match checked_in.get(name) {
            None => problems.push(format!("src/gen/{name} is missing")),
            Some(old) if old != text => problems.push(format!(
                "src/gen/{name} is stale; {}",
                first_difference(
                    &String::from_utf8_lossy(text),
                    &String::from_utf8_lossy(old)
                )
            )),
            Some(_) => {}
        }
    }
    for name in checked_in.keys().filter(|n| !generated.contains_key(*n)) {
        problems.push(format!(
            "src/gen/{name} is no longer generated by any .proto file"
        ));
    }
    assert!(
        problems.is_empty(),
        "the generated protobuf code does not match proto/:\n- {}\n\nRegenerate it with\n\n    \
         {REGENERATE_COMMAND}\n\nand commit the result.",
        problems.join("\n- "),
    );
}

/// Every generated file is compiled into the crate (a new protobuf package needs its
/// `include!` in `src/lib.rs`).
#[test]
fn every_generated_file_is_included() {
    let lib = fs::read_to_string(crate_dir().join("src/lib.rs")).expect("read src/lib.rs");
    for name in rust_files(&gen_dir()).keys() {
        let macro_name = if name == DESCRIPTOR_FILE {
            "include_bytes"
        } else {
            "include"
        };
        assert!(
            lib.contains(&format!("{macro_name}!(\"gen/{name}\")")),
            "src/lib.rs does not include src/gen/{name}"
        );
    }
}
