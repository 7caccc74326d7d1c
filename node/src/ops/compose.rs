//! `tetrad testnet --hosts … --compose`: a Docker Compose file for a testnet whose nodes are
//! containers, each with its own address on one bridge network and its own named volume.
//!
//! ```text
//! DIR/compose.yaml   services seed, v0 … v{N-1}, full0 …; volumes of the same names; network tetrad
//! ```
//!
//! The image (`Dockerfile`) runs `tetrad run` as user [`IMAGE_UID`] with its home at
//! [`IMAGE_HOME`] (a volume). The homes that `tetrad testnet` wrote on the host hold keys of mode
//! 0600 owned by whoever ran it, which that user cannot read through a bind mount; so a one-shot
//! `seed` service (root, no network) copies each `DIR/NAME` into the empty volume `NAME` and
//! hands it to [`IMAGE_UID`], and every node starts once `seed` has completed. A volume that
//! already holds a home (its `config.toml`, copied last) is left alone, so `up` after `stop` or
//! `kill` keeps each node's chain; `down -v` removes the volumes.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, bail};

use crate::ops::testnet::{HOSTED_RPC_PORT, TestnetFile};

/// The user the image runs as (`Dockerfile` creates it with this uid and gid).
pub const IMAGE_UID: u32 = 10001;
/// The node home inside the image (`TETRAD_HOME`, a volume).
pub const IMAGE_HOME: &str = "/var/lib/tetrad";

/// An IPv4 network in CIDR form, e.g. `172.28.0.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(text: &str) -> Result<Subnet> {
        let Some((address, prefix)) = text.split_once('/') else {
            bail!("--subnet {text:?}: expected an IPv4 network like 172.28.0.0/24");
        };
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| anyhow::anyhow!("--subnet {text:?}: {address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|prefix| (8..=29).contains(prefix))
            .ok_or_else(|| anyhow::anyhow!("--subnet {text:?}: the prefix length must be 8 to 29"))?;
        let subnet = Subnet { network: Ipv4Addr::from(u32::from(address) & Self::mask(prefix)), prefix };
        if subnet.network != address {
            bail!("--subnet {text:?}: host bits are set (the network is {subnet})");
        }
        Ok(subnet)
    }

    /// The /24 that holds `host`.
    pub fn around(host: Ipv4Addr) -> Subnet {
        Subnet { network: Ipv4Addr::from(u32::from(host) & Self::mask(24)), prefix: 24 }
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX << (32 - u32::from(prefix))
    }

    fn contains(&self, host: Ipv4Addr) -> bool {
        u32::from(host) & Self::mask(self.prefix) == u32::from(self.network)
    }

    /// The bridge's own address (Docker takes the first one).
    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !Self::mask(self.prefix))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What the compose file is made of besides the testnet.
pub struct ComposePlan {
    pub image: String,
    /// The compose network's subnet (default: the /24 of the first host).
    pub subnet: Option<Subnet>,
    /// Node i's RPC is published on host port `base_port + 2i + 1` (its `rpc_url`).
    pub base_port: u16,
}

/// The compose network's subnet for these node addresses, once every address is checked to be
/// an IPv4 container address in it (and the image name to be one).
pub fn check_hosts(hosts: &[IpAddr], plan: &ComposePlan) -> Result<Subnet> {
    if plan.image.is_empty() || plan.image.chars().any(|c| c.is_whitespace() || c == '"' || c == '$') {
        bail!("--image {:?}: not an image name", plan.image);
    }
    let mut ips = Vec::new();
    for host in hosts {
        match host {
            IpAddr::V4(ip) => ips.push(*ip),
            IpAddr::V6(ip) => bail!("--compose: {ip} is an IPv6 address; a compose network here is IPv4"),
        }
    }
    let subnet = match (plan.subnet, ips.first()) {
        (Some(subnet), _) => subnet,
        (None, Some(first)) => Subnet::around(*first),
        (None, None) => bail!("--compose needs --hosts (one container address per node)"),
    };
    for ip in ips {
        if !subnet.contains(ip) || ip == subnet.network || ip == subnet.gateway() || ip == subnet.broadcast()
        {
            bail!(
                "--hosts: {ip} is not a container address of {subnet} (its network, gateway {} and broadcast addresses are taken)",
                subnet.gateway()
            );
        }
    }
    Ok(subnet)
}

/// The text of `compose.yaml` for `file` (a testnet created with hosts).
pub fn compose_yaml(file: &TestnetFile, plan: &ComposePlan) -> Result<String> {
    let mut hosts = Vec::new();
    for node in &file.nodes {
        match node.host {
            Some(host) => hosts.push(host),
            None => bail!("--compose needs --hosts ({} has no address)", node.name),
        }
    }
    let subnet = check_hosts(&hosts, plan)?;
    let mut nodes = Vec::new();
    for (index, (node, host)) in file.nodes.iter().zip(&hosts).enumerate() {
        let host_port = u32::from(plan.base_port) + 2 * index as u32 + 1;
        nodes.push((node.name.as_str(), *host, host_port));
    }
    let image = &plan.image;
    let names: Vec<&str> = nodes.iter().map(|(name, _, _)| *name).collect();
    let mut out = String::new();
    // `write!` to a String cannot fail.
    let _ = writeln!(
        out,
        "# Generated by `tetrad testnet --hosts … --compose` (node/src/ops/compose.rs) for chain {}.\n\
         # Start and stop it with scripts/compose.sh up|down|status, or\n\
         #   docker compose -f compose.yaml -p PROJECT up -d     (docker-compose with Compose v1)\n\
         # Each node is a container with its own address on the network `tetrad` ({subnet}) and its\n\
         # own volume (its home, {IMAGE_HOME}); node i's RPC is published on 127.0.0.1 (ports below).\n\
         # `seed` copies each ./NAME home into its empty volume once, as root, then exits.",
        file.chain_id
    );
    let _ = writeln!(out, "services:");
    let _ = writeln!(out, "  seed:");
    let _ = writeln!(out, "    image: \"{image}\"");
    let _ = writeln!(out, "    user: \"0:0\"");
    let _ = writeln!(out, "    network_mode: none");
    let _ = writeln!(out, "    entrypoint: [\"/bin/sh\", \"-ec\"]");
    let _ = writeln!(out, "    command:");
    let _ = writeln!(out, "      - |");
    // `$$` is a literal `$` to Compose. config.toml is copied last: its presence means a whole home.
    let _ = writeln!(out, "        for node in {}; do", names.join(" "));
    let _ = writeln!(out, "          home=/homes/$$node");
    let _ = writeln!(
        out,
        "          if [ -e $$home/config.toml ]; then echo \"$$node: home kept\"; continue; fi"
    );
    let _ = writeln!(out, "          find $$home -mindepth 1 -delete");
    let _ = writeln!(out, "          for item in /seed/$$node/* /seed/$$node/.[!.]*; do");
    let _ = writeln!(
        out,
        "            if [ -e \"$$item\" ] && [ \"$${{item##*/}}\" != config.toml ]; then cp -a \"$$item\" $$home/; fi"
    );
    let _ = writeln!(out, "          done");
    let _ = writeln!(out, "          cp -a /seed/$$node/config.toml $$home/");
    let _ = writeln!(out, "          chown -R {IMAGE_UID}:{IMAGE_UID} $$home");
    let _ = writeln!(out, "          chmod 0700 $$home");
    let _ = writeln!(out, "          echo \"$$node: home seeded\"");
    let _ = writeln!(out, "        done");
    let _ = writeln!(out, "    volumes:");
    for name in &names {
        let _ = writeln!(out, "      - ./{name}:/seed/{name}:ro");
        let _ = writeln!(out, "      - {name}:/homes/{name}");
    }
    for (name, ip, host_port) in &nodes {
        let _ = writeln!(out, "  {name}:");
        let _ = writeln!(out, "    image: \"{image}\"");
        let _ = writeln!(out, "    hostname: {name}");
        let _ = writeln!(out, "    depends_on:");
        let _ = writeln!(out, "      seed:");
        let _ = writeln!(out, "        condition: service_completed_successfully");
        let _ = writeln!(out, "    environment:");
        let _ = writeln!(out, "      RUST_LOG: \"${{RUST_LOG:-info,libp2p=warn}}\"");
        let _ = writeln!(out, "    volumes:");
        let _ = writeln!(out, "      - {name}:{IMAGE_HOME}");
        let _ = writeln!(out, "    networks:");
        let _ = writeln!(out, "      tetrad:");
        let _ = writeln!(out, "        ipv4_address: {ip}");
        let _ = writeln!(out, "    ports:");
        let _ = writeln!(out, "      - \"127.0.0.1:{host_port}:{HOSTED_RPC_PORT}\"");
        let _ = writeln!(out, "    stop_grace_period: 20s");
    }
    let _ = writeln!(out, "volumes:");
    for name in &names {
        let _ = writeln!(out, "  {name}: {{}}");
    }
    let _ = writeln!(out, "networks:");
    let _ = writeln!(out, "  tetrad:");
    let _ = writeln!(out, "    ipam:");
    let _ = writeln!(out, "      config:");
    let _ = writeln!(out, "        - subnet: {subnet}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_refuse_host_bits() {
        let subnet = Subnet::parse("172.28.0.0/24").expect("valid");
        assert!(subnet.contains("172.28.0.10".parse().expect("ip")));
        assert!(!subnet.contains("172.28.1.10".parse().expect("ip")));
        assert_eq!(subnet.gateway(), Ipv4Addr::new(172, 28, 0, 1));
        assert_eq!(subnet.broadcast(), Ipv4Addr::new(172, 28, 0, 255));
        assert!(Subnet::parse("172.28.0.5/24").is_err());
        assert!(Subnet::parse("172.28.0.0").is_err());
        assert!(Subnet::parse("172.28.0.0/33").is_err());
        assert_eq!(Subnet::around(Ipv4Addr::new(10, 1, 2, 3)).to_string(), "10.1.2.0/24");
    }
}
