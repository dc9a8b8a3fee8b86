//! The README demo (`examples/demo.sh`) works: it checkpoints, kills and
//! restarts the hello counter and checks the counter continued.

use std::path::Path;
use std::time::Duration;

use dmtcp_tests::{setup, TestEnv, User};

#[test]
fn readme_demo() {
    let env = TestEnv::new("readme_demo", User::Current);
    let script = setup::workspace_dir().join("examples").join("demo.sh");
    let mut cmd = env.command_path(Path::new("bash"));
    cmd.arg(&script).env("DMTCP_BIN_DIR", env.bins());
    let out = env.run(cmd, "demo", Duration::from_secs(180));
    if !out.status.success() || !out.stdout.contains("demo: OK") {
        env.fail(&format!("examples/demo.sh failed: {}", out.describe()));
    }
    env.assert_no_computation_left("after examples/demo.sh", Duration::from_secs(10));
    env.finish();
}
