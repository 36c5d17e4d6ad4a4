//! The README's "Try it", as `scripts/try-it.sh` runs it: every step pasted in order against
//! the real binary (on free ports, with faster retries), each output checked. A few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_readme_try_it_works() {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/try-it.sh"))
        .arg(env!("CARGO_BIN_EXE_herald"))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/try-it.sh failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("try-it: every step passed"), "{stdout}");
}
