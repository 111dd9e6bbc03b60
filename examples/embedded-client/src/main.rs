//! `embedded-client ENDPOINT [KEY [VALUE]]`: write KEY = VALUE to the kompact-kv
//! cluster at ENDPOINT from a Kompact application that embeds the client component,
//! read it back, and print the result. Exit codes as `kvstore`: 0 success, 1 a wrong
//! answer, 2 usage, 3 unavailable.

use std::process::ExitCode;
use std::time::Duration;

use embedded_client::{Failure, put_then_get};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.len() > 3 || args[0].starts_with('-') {
        eprintln!("usage: embedded-client ENDPOINT [KEY [VALUE]]   (ENDPOINT is IP:PORT)");
        return ExitCode::from(2);
    }
    let endpoint = match args[0].parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "embedded-client: {:?} is not an IP:PORT address: {e}",
                args[0]
            );
            return ExitCode::from(2);
        }
    };
    let key = args.get(1).map_or("greeting", String::as_str);
    let value = args
        .get(2)
        .map_or("hello from an embedded client", String::as_str);
    match put_then_get(endpoint, key, value, Duration::from_secs(5)) {
        Ok(read) => {
            println!("put {key:?} = {value:?}, read back {read:?}");
            if read == value {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("embedded-client: {e}");
            ExitCode::from(match e {
                Failure::Setup(_) => 2,
                Failure::Unexpected(_) => 1,
                Failure::Store(_) => 3,
            })
        }
    }
}
