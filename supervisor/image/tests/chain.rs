//! Incremental images: a chain of three images resolves to the right bytes
//! at every address, merges into a standalone image, and a broken chain is
//! refused with a message naming the problem.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use dmtcp_image::*;

const BASE: u64 = 0x10_0000_0000;
const NPAGES: u64 = 64;

/// One anonymous VMA of 64 pages; `pages` maps page index -> fill byte
/// (saved in this image), `inherited` lists page indexes taken from the parent.
fn write(
    dir: &Path,
    name: &str,
    generation: u64,
    parent: Option<(&str, u64)>,
    pages: &[(u64, u8)],
    inherited: &[u64],
    codec: Codec,
) {
    let mut w = ImageWriter::create(
        &dir.join(name),
        WriteOptions {
            codec,
            ..WriteOptions::default()
        },
    )
    .unwrap();
    let mut runs = Vec::new();
    for &(i, byte) in pages {
        let data = w.add_pages(&[byte; 4096]).unwrap();
        runs.push(PageRun {
            addr: BASE + i * PAGE_SIZE,
            npages: 1,
            data,
        });
    }
    runs.sort_by_key(|r| r.addr);
    let mut meta = sample_image(vec![Vma {
        start: BASE,
        end: BASE + NPAGES * PAGE_SIZE,
        prot: 3,
        shared: false,
        kind: VmaKind::Anon { name: None },
        growsdown: false,
        account: false,
        pages: runs,
        from_parent: inherited
            .iter()
            .map(|&i| PageSpan {
                addr: BASE + i * PAGE_SIZE,
                npages: 1,
            })
            .collect(),
    }]);
    meta.computation.generation = generation;
    meta.parent = parent.map(|(file, generation)| ParentRef {
        file: file.into(),
        generation,
    });
    w.finish(&meta).unwrap();
}

/// Page index -> first byte, as the chain restores it (absent: zero).
fn memory(chain: &ImageChain) -> BTreeMap<u64, u8> {
    let out = std::sync::Mutex::new(BTreeMap::new());
    chain
        .read_pages(&|addr, bytes| {
            let mut m = out.lock().unwrap();
            for (k, page) in bytes.chunks(4096).enumerate() {
                assert!(page.iter().all(|&b| b == page[0]));
                m.insert((addr - BASE) / PAGE_SIZE + k as u64, page[0]);
            }
            Ok(())
        })
        .unwrap();
    out.into_inner().unwrap()
}

fn three_generations(dir: &Path, codec: Codec) {
    // gen 1: pages 0..10 = 1, page 20 = 20.
    let full: Vec<(u64, u8)> = (0..10).map(|i| (i, 1)).chain([(20, 20)]).collect();
    write(dir, "g1", 1, None, &full, &[], codec);
    // gen 2: page 3 rewritten, page 30 new, 0..10 (but 3) and 20 unchanged.
    let kept: Vec<u64> = (0..10).filter(|&i| i != 3).chain([20]).collect();
    write(
        dir,
        "g2",
        2,
        Some(("g1", 1)),
        &[(3, 33), (30, 30)],
        &kept,
        codec,
    );
    // gen 3: page 5 rewritten; page 20 dropped (zapped); 40 is "unchanged"
    // but nobody saved it (zero).
    let kept: Vec<u64> = (0..10).filter(|&i| i != 5).chain([30, 40]).collect();
    write(dir, "g3", 3, Some(("g2", 2)), &[(5, 55)], &kept, codec);
}

#[test]
fn chain_resolves_merges_and_restores_the_same_bytes() {
    for codec in [Codec::None, Codec::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        three_generations(dir.path(), codec);
        let chain = ImageChain::open(&dir.path().join("g3")).unwrap();
        assert_eq!(chain.readers().len(), 3);
        let want: BTreeMap<u64, u8> = [
            (0, 1),
            (1, 1),
            (2, 1),
            (3, 33),
            (4, 1),
            (5, 55),
            (6, 1),
            (7, 1),
            (8, 1),
            (9, 1),
            (30, 30),
        ]
        .into_iter()
        .collect();
        assert_eq!(memory(&chain), want);

        let merged = dir.path().join("merged");
        chain.merge(&merged, WriteOptions::default()).unwrap();
        let m = ImageChain::open(&merged).unwrap();
        assert_eq!(m.readers().len(), 1);
        assert!(m.top().meta().parent.is_none());
        assert_eq!(memory(&m), want);
        // Once merged, the parents are no longer needed.
        std::fs::remove_file(dir.path().join("g1")).unwrap();
        std::fs::remove_file(dir.path().join("g2")).unwrap();
        assert_eq!(memory(&ImageChain::open(&merged).unwrap()), want);
    }
}

#[test]
fn broken_chains_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    three_generations(dir.path(), Codec::None);
    // Wrong generation named by the child.
    write(
        dir.path(),
        "bad",
        3,
        Some(("g2", 1)),
        &[],
        &[1],
        Codec::None,
    );
    let e = ImageChain::open(&dir.path().join("bad"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("generation 2, expected"), "{e}");
    // A missing parent.
    std::fs::remove_file(dir.path().join("g1")).unwrap();
    let e = ImageChain::open(&dir.path().join("g3"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("parent image") && e.contains("missing"), "{e}");
    // Pages from a parent in an image without one.
    write(dir.path(), "orphan", 1, None, &[], &[1], Codec::None);
    let e = ImageChain::open(&dir.path().join("orphan"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("has no parent"), "{e}");
}
