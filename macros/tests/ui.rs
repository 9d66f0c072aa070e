//! Compile-time behaviour of `#[celeriac::task]`: what must compile, and what must fail with an error
//! pointing at the offending token (snapshots in `ui/fail/*.stderr`; re-bless with
//! `TRYBUILD=overwrite` after a toolchain bump and review the diff).

#[test]
fn task_macro_ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/fail/*.rs");
}
