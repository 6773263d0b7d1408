//! A tracefs `format` file of any shape: the parser, the symbol tables of its print fmt and the
//! three layouts the loader derives from it return errors, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netlat::kernel::tracefs::{self, EventFormat};

fuzz_target!(|text: &str| {
    let Ok(f) = EventFormat::parse(text) else {
        return;
    };
    for field in &f.fields {
        let _ = f.symbols(&field.name);
    }
    let _ = f.symbols("reason");
    let _ = tracefs::sock_state_layout(&f);
    let _ = tracefs::retransmit_layout(&f);
    let _ = tracefs::kfree_layout(&f);
});
