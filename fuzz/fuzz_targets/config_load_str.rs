//! The HOCON configuration loader (`kv_bootstrap::config::load_str`): any text
//! gives a configuration or a one-line error naming the origin, never a panic or a
//! hang. A configuration it accepts passes `validate` as well.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match kv_bootstrap::config::load_str(text, "fuzz.conf") {
        Ok(cfg) => {
            if let Err(e) = cfg.validate("fuzz.conf") {
                panic!("load_str accepted a configuration validate rejects: {e}");
            }
        }
        Err(e) => {
            let line = e.to_string();
            assert!(
                line.starts_with("fuzz.conf"),
                "error without origin: {line}"
            );
        }
    }
});
