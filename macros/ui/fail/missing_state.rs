//! The state wrapper forgotten: a shared client written as a plain parameter is read as an argument
//! that would travel through the broker. One error, at the type, saying to take it as `State<…>`.
//! (State that is declared but never provided is a `BuildError::MissingState` when the app is built,
//! see `tests/tests/app.rs`: which values an app holds is only known at run time.)

#[derive(Clone)]
struct Gateway;

#[celeriac::task]
async fn ccp_send_sms_code(_gateway: Gateway, _mobile: String, _code: String) {}

fn main() {}
