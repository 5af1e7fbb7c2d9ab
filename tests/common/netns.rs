//! "Hosts" for tests: network namespaces, each with its own address on a bridge in
//! the test's namespace, which reaches them all (and which they reach, for an S3
//! server listening on the bridge's address). Needs root; removed on drop.
use super::host::run;
use std::net::Ipv4Addr;
use std::process::Command;

pub struct Net {
    bridge: String,
    names: Vec<String>,
    subnet: u8,
}

impl Net {
    /// `n` hosts on a subnet of its own (10.213.S.0/24, S from the process id, so
    /// test processes side by side do not meet).
    pub fn new(tag: &str, n: usize) -> Net {
        let subnet = (std::process::id() % 200) as u8 + 20;
        let bridge = format!("cbr{subnet}{tag}");
        let ip = |c: &mut Command| run(c);
        ip(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]));
        let mut net = Net {
            bridge: bridge.clone(),
            names: Vec::new(),
            subnet,
        };
        ip(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/24", net.gateway()),
            "dev",
            &bridge,
        ]));
        ip(Command::new("ip").args(["link", "set", &bridge, "up"]));
        for i in 0..n {
            let name = format!("cas{subnet}{tag}{i}");
            let veth = format!("v{subnet}{tag}{i}");
            ip(Command::new("ip").args(["netns", "add", &name]));
            net.names.push(name.clone());
            ip(Command::new("ip").args([
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ]));
            ip(Command::new("ip").args(["link", "set", &veth, "master", &bridge, "up"]));
            ip(Command::new("ip").args([
                "-n",
                &name,
                "addr",
                "add",
                &format!("{}/24", net.host(i)),
                "dev",
                "eth0",
            ]));
            ip(Command::new("ip").args(["-n", &name, "link", "set", "eth0", "up"]));
            ip(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        }
        net
    }

    /// The bridge's address: this namespace, as the hosts reach it.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    pub fn host(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 10 + i as u8)
    }

    /// The words that run a command on host `i`.
    pub fn wrap(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.names[i].clone(),
        ]
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.names {
            super::host::quiet(Command::new("ip").args(["netns", "del", n]), true);
        }
        super::host::quiet(Command::new("ip").args(["link", "del", &self.bridge]), true);
    }
}
