//! The ceiling for the server benchmarks: a bare actix-web handler answering
//! a small JSON document, built with the same dependencies and profile as
//! `xrole serve`. `scripts/bench` runs it next to the real routes.
//!
//! ```sh
//! cargo run --release -p xrole-server --example bench_hello -- 127.0.0.1:8099
//! ```

use actix_web::{App, HttpResponse, HttpServer, web};

async fn hello() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"hello": "world"}))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".to_owned());
    HttpServer::new(|| App::new().route("/hello", web::get().to(hello)))
        .bind(&addr)?
        .run()
        .await
}
