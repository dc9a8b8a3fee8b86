//! `client::ensure_coordinator` starting a real daemon. One test per file:
//! it sets process-wide environment variables.

use std::time::{Duration, Instant};

use dmtcp_coordinator::client::{
    ensure_coordinator, read_secret, request, CoordAddr, StartOptions,
};
use dmtcp_coordinator::protocol::{Reply, Request};

#[test]
fn ensure_starts_finds_and_refuses() {
    let tmp = std::env::temp_dir().join(format!("dmtcp-coord-ensure-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::env::set_var("DMTCP_TMPDIR", &tmp);
    std::env::remove_var("DMTCP_SECRET");
    std::env::remove_var("DMTCP_LOG");

    let ckpt = tmp.join("ck");
    let opts = StartOptions {
        ckpt_dir: Some(ckpt.clone()),
        interval: None,
        exit_on_last: false,
    };
    let t = Instant::now();
    let (addr, secret) = ensure_coordinator(
        &CoordAddr {
            host: "127.0.0.1".into(),
            port: 0,
        },
        false,
        &opts,
    )
    .expect("start a coordinator");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_ne!(addr.port, 0);
    assert_eq!(read_secret(&addr).as_deref(), Some(secret.as_str()));
    match request(&addr, &secret, Request::Status).unwrap() {
        Reply::Status(st) | Reply::StatusProgress { status: st, .. } => assert_eq!(
            std::path::PathBuf::from(st.ckpt_dir),
            ckpt.canonicalize().unwrap()
        ),
        other => panic!("{other:?}"),
    }

    // It is found, not started again.
    let (again, s2) = ensure_coordinator(&addr, false, &opts).unwrap();
    assert_eq!((again, s2), (addr.clone(), secret.clone()));

    // force_new on a busy port fails with the coordinator's own message.
    let err = ensure_coordinator(&addr, true, &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("dmtcp-coordinator: port {} is already in use", addr.port)
    );

    assert_eq!(request(&addr, &secret, Request::Quit).unwrap(), Reply::Ok);

    // A port held by something else.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        drop(s);
    });
    let err = ensure_coordinator(
        &CoordAddr {
            host: "127.0.0.1".into(),
            port,
        },
        false,
        &opts,
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "coordinator port {port} is in use by something that is not a DMTCP coordinator"
        )),
        "{err}"
    );
    t.join().unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}
