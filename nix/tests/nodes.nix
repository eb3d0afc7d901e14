# The settings each VM test node's configuration file holds, exactly as the module
# renders it (module defaults and the credential path of the cluster secret included).
# Pure data: the repository's tests evaluate this file without nixpkgs and compare it
# with node1.toml, node2.toml and node3.toml beside it, which `sluice config check`
# validates.
let
  credentials = "/run/credentials/sluice.service";
  node = name: extra: {
    inherit name;
    data_dir = "/var/lib/sluice";
    http = "0.0.0.0:8080";
    cluster = "0.0.0.0:7000";
    rtmp = "0.0.0.0:1935";
    srt = "0.0.0.0:9000";
    advertise_cluster = "http://${name}:7000";
    advertise_http = "http://${name}:8080";
    cluster_secret_file = "${credentials}/cluster-secret";
    # Failover within the test's patience: a node is down after 3 s without a lease.
    lease_ttl_ms = 3000;
  } // extra;
in
{
  node1 = node "node1" { };
  node2 = node "node2" { join = "http://node1:7000"; };
  node3 = node "node3" { join = "http://node1:7000"; };
}
