//! `dmtcp-run --sandbox[=POLICY]`: the computation's seccomp policy.
//!
//! A policy is an OCI/Docker seccomp profile (JSON: `defaultAction`,
//! `defaultErrnoRet`, `architectures`/`archMap`, `syscalls[]` with `names`,
//! `action`, `errnoRet`, `args[]`); the default one is `default.json` next
//! to this file. The profile becomes one classic-BPF program:
//!
//! 1. our prefix: a foreign architecture kills the process, an x32 system
//!    call number (bit 30) fails with EPERM (it would dodge rules written
//!    for x86-64 numbers);
//! 2. one program built by seccompiler per action of the profile's rules
//!    (most restrictive first: kill, trap, errno, trace, log), each
//!    returning its action for its rules and ALLOW otherwise;
//! 3. one seccompiler program returning the default action for every call
//!    no rule names.
//!
//! They are chained into one program: every `ret ALLOW` of a part but the
//! last becomes a jump to the next part. `dmtcp-nsinit` installs it (with
//! `no_new_privs`) in the program's process just before the exec; the
//! capture records it as the root of every thread's chain and the restore
//! installs it last (resources/seccomp.rs). No rule depends on the
//! instruction pointer: there is no exempt path to jump to.

pub mod landlock;
pub mod syscalls;

use std::collections::BTreeMap;
use std::sync::Arc;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde_json::Value;

use crate::kernel::seccomp::{Chain, AUDIT_ARCH_X86_64, RET_ALLOW};

/// The default policy (a Docker-format profile).
pub const DEFAULT_PROFILE: &str = include_str!("default.json");

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// "default" or the profile's path.
    pub name: String,
    /// The BPF program (`struct sock_filter` array).
    pub prog: Vec<u8>,
}

/// The syscalls every checkpoint runs inside the program's threads (and
/// the restore's last calls): a policy must allow them.
const TOOL_CALLS: &[(&str, i64)] = &[
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("brk", libc::SYS_brk),
    ("prctl", libc::SYS_prctl),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("getitimer", libc::SYS_getitimer),
    ("timer_gettime", libc::SYS_timer_gettime),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("gettid", libc::SYS_gettid),
    ("get_robust_list", libc::SYS_get_robust_list),
    ("seccomp", libc::SYS_seccomp),
    ("close", libc::SYS_close),
];

pub fn syscall_number(name: &str) -> Option<i64> {
    syscalls::SYSCALLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, nr)| *nr)
}

/// Loads `--sandbox[=POLICY]`: "default" or a profile file.
pub fn load(spec: &str) -> Result<Policy, String> {
    if spec == "default" {
        let prog = compile(DEFAULT_PROFILE).map_err(|e| format!("default policy: {e}"))?;
        return Ok(Policy {
            name: "default".into(),
            prog,
        });
    }
    let text = std::fs::read_to_string(spec).map_err(|e| format!("--sandbox={spec}: {e}"))?;
    let prog = compile(&text).map_err(|e| format!("--sandbox={spec}: {e}"))?;
    check_tool_calls(&prog).map_err(|e| format!("--sandbox={spec}: {e}"))?;
    Ok(Policy {
        name: spec.to_string(),
        prog,
    })
}

fn action(v: &Value, errno: Option<u32>, path: &str) -> Result<SeccompAction, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{path}: expected a string"))?;
    Ok(match s {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" | "SCMP_ACT_NOTIFY" => {
            return Err(format!(
                "{path}: {s} is not supported (the computation has no seccomp tracer or listener)"
            ))
        }
        _ => return Err(format!("{path}: unknown action {s:?}")),
    })
}

fn u64_field(v: &Value, key: &str, path: &str) -> Result<Option<u64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{path}.{key}: expected a non-negative integer")),
    }
}

fn condition(a: &Value, path: &str) -> Result<SeccompCondition, String> {
    if !a.is_object() {
        return Err(format!("{path}: expected an object"));
    }
    let index = u64_field(a, "index", path)?.ok_or_else(|| format!("{path}.index: missing"))?;
    if index > 5 {
        return Err(format!("{path}.index: {index} is not an argument (0..=5)"));
    }
    let value = u64_field(a, "value", path)?.unwrap_or(0);
    let two = u64_field(a, "valueTwo", path)?.unwrap_or(0);
    let op = a
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{path}.op: missing"))?;
    let (op, value) = match op {
        "SCMP_CMP_NE" => (SeccompCmpOp::Ne, value),
        "SCMP_CMP_LT" => (SeccompCmpOp::Lt, value),
        "SCMP_CMP_LE" => (SeccompCmpOp::Le, value),
        "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, value),
        "SCMP_CMP_GE" => (SeccompCmpOp::Ge, value),
        "SCMP_CMP_GT" => (SeccompCmpOp::Gt, value),
        // libseccomp: (arg & value) == valueTwo.
        "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(value), two),
        other => return Err(format!("{path}.op: unknown operator {other:?}")),
    };
    SeccompCondition::new(index as u8, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| format!("{path}: {e}"))
}

/// Kernel precedence of an action: lower runs first (and wins).
fn rank(a: &SeccompAction) -> i64 {
    (u32::from(a.clone()) & 0xffff_0000) as i32 as i64
}

/// Rules per syscall: `None` matches every call of it.
type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add_rule(
    rules: &mut Rules,
    nr: i64,
    conds: &Option<Vec<SeccompCondition>>,
) -> Result<(), String> {
    let entry = rules.entry(nr).or_insert_with(|| Some(Vec::new()));
    match (conds, entry.as_mut()) {
        (None, _) => *entry = None,
        (Some(c), Some(list)) => list.push(SeccompRule::new(c.clone()).map_err(|e| e.to_string())?),
        (Some(_), None) => {}
    }
    Ok(())
}

fn program(
    rules: &Rules,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, String> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = rules
        .iter()
        .map(|(nr, r)| (*nr, r.clone().unwrap_or_default()))
        .collect();
    let f = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)
        .map_err(|e| e.to_string())?;
    BpfProgram::try_from(f).map_err(|e| e.to_string())
}

/// Compiles a Docker-format profile into one BPF program.
pub fn compile(text: &str) -> Result<Vec<u8>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("$: invalid JSON: {e}"))?;
    if !v.is_object() {
        return Err("$: expected an object".into());
    }
    let default_errno = u64_field(&v, "defaultErrnoRet", "$")?.map(|x| x as u32);
    let default = action(
        v.get("defaultAction").ok_or("$.defaultAction: missing")?,
        default_errno,
        "$.defaultAction",
    )?;
    let mut arches: Vec<String> = Vec::new();
    if let Some(a) = v.get("architectures") {
        let list = a.as_array().ok_or("$.architectures: expected an array")?;
        for (i, x) in list.iter().enumerate() {
            arches.push(
                x.as_str()
                    .ok_or_else(|| format!("$.architectures[{i}]: expected a string"))?
                    .to_string(),
            );
        }
    }
    if let Some(a) = v.get("archMap") {
        let list = a.as_array().ok_or("$.archMap: expected an array")?;
        for (i, x) in list.iter().enumerate() {
            arches.push(
                x.get("architecture")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("$.archMap[{i}].architecture: expected a string"))?
                    .to_string(),
            );
        }
    }
    if !arches.is_empty() && !arches.iter().any(|a| a == "SCMP_ARCH_X86_64") {
        return Err("$.architectures: SCMP_ARCH_X86_64 is not among them".into());
    }
    // Rules grouped by action; every syscall any rule names.
    let mut groups: Vec<(SeccompAction, Rules)> = Vec::new();
    let mut named: Rules = BTreeMap::new();
    let empty = Vec::new();
    let list = match v.get("syscalls") {
        None | Some(Value::Null) => &empty,
        Some(s) => s.as_array().ok_or("$.syscalls: expected an array")?,
    };
    for (i, r) in list.iter().enumerate() {
        let path = format!("$.syscalls[{i}]");
        if !r.is_object() {
            return Err(format!("{path}: expected an object"));
        }
        // Rules for capabilities we never grant, or for other
        // architectures, do not apply.
        if let Some(inc) = r.get("includes") {
            let caps = inc.get("caps").and_then(Value::as_array);
            let arch = inc.get("arches").and_then(Value::as_array);
            if caps.is_some_and(|c| !c.is_empty())
                || arch.is_some_and(|a| !a.iter().any(|x| x == "amd64" || x == "x86_64"))
            {
                continue;
            }
        }
        let errno = u64_field(r, "errnoRet", &path)?.map(|x| x as u32);
        let act = action(
            r.get("action")
                .ok_or_else(|| format!("{path}.action: missing"))?,
            errno,
            &format!("{path}.action"),
        )?;
        let mut names: Vec<(String, String)> = Vec::new();
        if let Some(n) = r.get("names") {
            let arr = n
                .as_array()
                .ok_or_else(|| format!("{path}.names: expected an array"))?;
            for (j, x) in arr.iter().enumerate() {
                names.push((
                    x.as_str()
                        .ok_or_else(|| format!("{path}.names[{j}]: expected a string"))?
                        .to_string(),
                    format!("{path}.names[{j}]"),
                ));
            }
        }
        if let Some(n) = r.get("name") {
            names.push((
                n.as_str()
                    .ok_or_else(|| format!("{path}.name: expected a string"))?
                    .to_string(),
                format!("{path}.name"),
            ));
        }
        if names.is_empty() {
            return Err(format!("{path}.names: missing"));
        }
        let conds = match r.get("args") {
            None | Some(Value::Null) => None,
            Some(a) => {
                let arr = a
                    .as_array()
                    .ok_or_else(|| format!("{path}.args: expected an array"))?;
                if arr.is_empty() {
                    None
                } else {
                    Some(
                        arr.iter()
                            .enumerate()
                            .map(|(j, c)| condition(c, &format!("{path}.args[{j}]")))
                            .collect::<Result<Vec<_>, _>>()?,
                    )
                }
            }
        };
        for (name, npath) in names {
            if name.is_empty() {
                return Err(format!("{npath}: empty syscall name"));
            }
            // Profiles name calls other architectures or kernels have:
            // those are skipped, as container runtimes do.
            let Some(nr) = syscall_number(&name) else {
                tracing::debug!("{npath}: no x86-64 syscall {name:?}: rule skipped");
                continue;
            };
            add_rule(&mut named, nr, &conds)?;
            if act == SeccompAction::Allow {
                continue;
            }
            let g = match groups.iter_mut().position(|(a, _)| *a == act) {
                Some(p) => &mut groups[p].1,
                None => {
                    groups.push((act.clone(), BTreeMap::new()));
                    &mut groups.last_mut().expect("just pushed").1
                }
            };
            add_rule(g, nr, &conds)?;
        }
    }
    groups.sort_by_key(|(a, _)| rank(a));
    let mut parts: Vec<BpfProgram> = Vec::new();
    for (act, rules) in &groups {
        if *act != default {
            parts.push(program(rules, SeccompAction::Allow, act.clone())?);
        }
    }
    if default != SeccompAction::Allow {
        parts.push(program(&named, default.clone(), SeccompAction::Allow)?);
    }
    let prog = chain_parts(parts);
    if prog.len() >= 4096 {
        return Err(format!(
            "$: the profile compiles to {} BPF instructions (at most 4095)",
            prog.len()
        ));
    }
    Ok(prog.iter().flat_map(insn_bytes).collect())
}

fn stmt(code: u16, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn insn_bytes(i: &seccompiler::sock_filter) -> Vec<u8> {
    let mut b = i.code.to_ne_bytes().to_vec();
    b.push(i.jt);
    b.push(i.jf);
    b.extend_from_slice(&i.k.to_ne_bytes());
    b
}

/// Our prefix, then the parts chained: a part's `ret ALLOW` jumps to the
/// next part (the last part's stays).
fn chain_parts(parts: Vec<BpfProgram>) -> Vec<seccompiler::sock_filter> {
    const RET_K: u16 = 0x06;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const JA: u16 = 0x05;
    let mut out = vec![
        stmt(LD_W_ABS, 4),
        seccompiler::sock_filter {
            code: JEQ_K,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH_X86_64,
        },
        stmt(RET_K, crate::kernel::seccomp::RET_KILL_PROCESS),
        stmt(LD_W_ABS, 0),
        seccompiler::sock_filter {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: 0x4000_0000,
        },
        stmt(
            RET_K,
            crate::kernel::seccomp::RET_ERRNO | libc::EPERM as u32,
        ),
    ];
    let n = parts.len();
    if n == 0 {
        out.push(stmt(RET_K, RET_ALLOW));
        return out;
    }
    for (p, part) in parts.into_iter().enumerate() {
        let start = out.len();
        let end = start + part.len();
        for (i, mut insn) in part.into_iter().enumerate() {
            if p + 1 < n && insn.code == RET_K && insn.k == RET_ALLOW {
                insn = stmt(JA, (end - (start + i + 1)) as u32);
            }
            out.push(insn);
        }
    }
    out
}

/// Refuses a policy that denies what the tool must run inside the
/// program's threads at a checkpoint (checked with the policy itself).
pub fn check_tool_calls(prog: &[u8]) -> Result<(), String> {
    let chain = Chain {
        progs: vec![Arc::new(prog.to_vec())],
        strict: false,
    };
    for (name, nr) in TOOL_CALLS {
        if chain.eval(*nr, 0, [0; 6]) & 0xffff_0000 != RET_ALLOW {
            return Err(format!(
                "the policy does not allow {name}, which checkpoints run inside the program"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(prog: &[u8], nr: i64, a0: u64) -> u32 {
        Chain {
            progs: vec![Arc::new(prog.to_vec())],
            strict: false,
        }
        .eval(nr, 0, [a0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn default_policy_denies_and_allows() {
        let p = load("default").unwrap();
        let eperm = crate::kernel::seccomp::RET_ERRNO | 1;
        assert_eq!(eval(&p.prog, libc::SYS_bpf, 0), eperm);
        assert_eq!(eval(&p.prog, libc::SYS_keyctl, 0), eperm);
        assert_eq!(
            eval(&p.prog, libc::SYS_unshare, libc::CLONE_NEWUSER as u64),
            eperm
        );
        assert_eq!(
            eval(&p.prog, libc::SYS_unshare, libc::CLONE_FILES as u64),
            RET_ALLOW
        );
        assert_eq!(
            eval(&p.prog, libc::SYS_clone, libc::SIGCHLD as u64),
            RET_ALLOW
        );
        assert_eq!(eval(&p.prog, libc::SYS_getpid, 0), RET_ALLOW);
        assert_eq!(eval(&p.prog, 0x4000_0000 | libc::SYS_getpid, 0), eperm);
        check_tool_calls(&p.prog).unwrap();
    }

    #[test]
    fn docker_profile_with_default_errno() {
        let prof = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
            "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
            "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":18},
                        {"names":["read","write","mmap","nosuchcall"],"action":"SCMP_ACT_ALLOW"}]}"#;
        let p = compile(prof).unwrap();
        let e = crate::kernel::seccomp::RET_ERRNO;
        assert_eq!(eval(&p, libc::SYS_getppid, 0), e | 18);
        assert_eq!(eval(&p, libc::SYS_read, 0), RET_ALLOW);
        assert_eq!(eval(&p, libc::SYS_getpid, 0), e | 38);
    }

    #[test]
    fn bad_profiles_name_the_json_path() {
        for (text, want) in [
            ("[]", "$: expected an object"),
            ("{}", "$.defaultAction: missing"),
            (
                r#"{"defaultAction":"SCMP_ACT_NOPE"}"#,
                "$.defaultAction: unknown action",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":9,"op":"SCMP_CMP_EQ"}]}]}"#,
                "$.syscalls[0].args[0].index",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[3],"action":"SCMP_ACT_ERRNO"}]}"#,
                "$.syscalls[0].names[0]: expected a string",
            ),
        ] {
            let e = compile(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'));
        }
    }
}
