//! Loading the key store: any bytes give a store or an error (never a panic),
//! and a store that loads is written back so that it loads again the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orproxy::internals::{FileStore, StoreError, render};

fuzz_target!(|bytes: &[u8]| {
    let store = FileStore::new("/nonexistent/keys.json");
    match store.parse(bytes) {
        Ok(file) => {
            let written = render(&file).expect("a loaded store renders");
            let again = store.parse(&written).expect("a rendered store loads");
            assert_eq!(again, file);
        }
        Err(StoreError::Corrupt { line, column, .. }) => {
            assert!(line >= 1 || column == 0, "line {line} column {column}");
        }
        Err(StoreError::UnknownVersion { found, .. }) => assert_ne!(found, 1),
        Err(e) => panic!("parse gave {e}"),
    }
});
