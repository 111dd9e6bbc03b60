//! `docs/wire.md` stays in sync with `ids.rs`.

#[test]
fn docs_list_every_serialisation_id() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/wire.md");
    let doc = std::fs::read_to_string(path).expect("docs/wire.md");
    for (id, name) in kv_wire::ids::ALL {
        let row = doc
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("docs/wire.md has no table row for {name}"));
        assert!(
            row.contains(&format!("| {id} |")),
            "docs/wire.md gives {name} another id than {id}: {row}"
        );
    }
}
