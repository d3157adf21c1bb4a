//! Each command and reply of the protocol, one by one.

use crate::util::Chatd;

#[test]
fn a_session_as_in_the_protocol() {
    let chatd = Chatd::start(&[]);
    let mut ana = chatd.join("Ana");
    let mut carlos = chatd.join("Carlos");
    ana.expect("JOINED Carlos");
    carlos.send("NAMES");
    carlos.expect("NAMES Ana Carlos");
    ana.send("MSG Hola a todos");
    carlos.expect("MSG Ana Hola a todos");
    carlos.send("MSG ¡Hola, Ana!");
    ana.expect("MSG Carlos ¡Hola, Ana!");
    let mut luis = chatd.join("Luis");
    carlos.expect("JOINED Luis");
    carlos.send("PING 1");
    carlos.expect("PONG 1");
    carlos.send("EXIT");
    carlos.expect_closed_after("BYE exit");
    luis.expect("LEFT Carlos exit");
    ana.expect("JOINED Luis");
    ana.expect("LEFT Carlos exit");
    ana.expect_quiet();
}
