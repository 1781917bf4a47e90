//! The testkit's services leave nothing behind.

use std::path::Path;

use xrole_testkit::{Moto, TestDb, postgres_database_exists};

#[test]
fn moto_answers_and_is_gone_after_drop() {
    let moto = Moto::start().unwrap();
    let pid = moto.pid();
    let addr = moto.addr();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(moto);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "moto process {pid} still exists"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "something still listens on {addr}"
    );
}

#[test]
fn moto_is_killed_when_a_test_panics() {
    let pid = std::sync::Mutex::new(0);
    let result = std::panic::catch_unwind(|| {
        let moto = Moto::start().unwrap();
        *pid.lock().unwrap() = moto.pid();
        panic!("test failure while moto runs");
    });
    assert!(result.is_err());
    let pid = *pid.lock().unwrap();
    assert!(pid > 0);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "moto {pid} outlived the panic"
    );
}

#[test]
fn sqlite_file_is_removed_after_drop() {
    let db = TestDb::sqlite().unwrap();
    let path = db.sqlite_path().unwrap();
    std::fs::write(&path, b"x").unwrap();
    assert!(db.url().starts_with("sqlite://"));
    drop(db);
    assert!(!path.exists());
    assert!(!path.parent().unwrap().exists());
}

#[test]
fn postgres_database_is_dropped_after_drop() {
    let Some(db) = TestDb::postgres().unwrap() else {
        return;
    };
    let name = db.postgres_name().unwrap().to_owned();
    assert!(db.url().starts_with("postgres://"));
    assert!(postgres_database_exists(&name).unwrap());
    drop(db);
    assert!(
        !postgres_database_exists(&name).unwrap(),
        "database {name} left behind"
    );
}
