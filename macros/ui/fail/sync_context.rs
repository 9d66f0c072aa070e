//! A plain (blocking) function may take the context, as the first parameter and by value
//! (`ui/pass/every_option.rs`); each way of getting that wrong is one error at its token.

use celeriac::TaskContext;

#[celeriac::task]
fn context_by_reference(_ctx: &TaskContext, _n: u64) {}

#[celeriac::task]
fn context_after_an_argument(_n: u64, _ctx: TaskContext) {}

#[celeriac::task]
fn context_twice(_ctx: TaskContext, _again: TaskContext) {}

fn main() {}
