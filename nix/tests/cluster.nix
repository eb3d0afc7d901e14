# Three Sluice nodes and a client: the cluster forms, ffmpeg publishes to node 1,
# node 3 serves the stream (ffprobe), node 1 is shut down, the publisher moves to
# node 2 and node 3 keeps serving. Run with `nix flake check '.?dir=nix'` on a machine
# with Nix and KVM.
{ sluiceModule, sluicePackage }:

let
  settings = import ./nodes.nix;
  # Test-only secrets, in the store on purpose: real deployments point
  # clusterSecretFile and adminTokenFile at files outside it.
  clusterSecret = "6c3f1d0e2b9a48d7a1e5c0f4b8d2e6a9c3f7b1d5e9a2c6f0b4d8e2a6c0f4b8d2";
  adminToken = "vm-test-admin-token-0123456789abcdef";

  node = name: { pkgs, ... }: {
    imports = [ sluiceModule ];
    services.sluice = {
      enable = true;
      package = sluicePackage;
      # The module adds cluster_secret_file from clusterSecretFile.
      settings = removeAttrs settings.${name} [ "cluster_secret_file" ];
      clusterSecretFile = "/etc/sluice-test/cluster-secret";
      adminTokenFile = "/etc/sluice-test/admin-token";
      openFirewall = true;
    };
    environment.etc."sluice-test/cluster-secret".text = clusterSecret;
    environment.etc."sluice-test/admin-token".text = adminToken;
    virtualisation.memorySize = 1024;
  };
in
{
  name = "sluice-cluster";

  nodes = {
    node1 = node "node1";
    node2 = node "node2";
    node3 = node "node3";
    client = { pkgs, ... }: {
      environment.systemPackages = [ pkgs.ffmpeg pkgs.curl sluicePackage ];
      environment.etc."sluice-test/admin-token".text = adminToken;
      virtualisation.memorySize = 1024;
    };
  };

  testScript = ''
    import json

    api = "--token-file /etc/sluice-test/admin-token --json"

    def cluster(via):
        return json.loads(client.succeed(f"sluice cluster status --server http://{via}:8080 {api}"))

    start_all()
    # Type=notify: the unit is active once the node belongs to a cluster with a leader.
    node1.wait_for_unit("sluice.service")
    node2.wait_for_unit("sluice.service")
    node3.wait_for_unit("sluice.service")
    client.wait_for_unit("multi-user.target")

    with subtest("the cluster forms"):
        client.wait_until_succeeds(
            f"sluice cluster status --server http://node3:8080 {api} "
            "| python3 -c 'import json,sys; s=json.load(sys.stdin); "
            "assert sum(m[\"healthy\"] and m[\"voter\"] for m in s[\"members\"]) == 3'",
            timeout=120,
        )
        assert cluster("node2")["leader"] is not None

    key = node1.succeed("cat /var/lib/sluice/main.stream-key").strip()
    publish = (
        "ffmpeg -nostdin -re -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine "
        "-c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac -t 900 "
        "-f flv rtmp://{}/live/" + key
    )

    with subtest("ffmpeg publishes to node 1, node 3 serves it"):
        client.succeed(f"systemd-run --unit=publisher-1 {publish.format('node1')}")
        client.wait_until_succeeds(
            "ffprobe -v error -show_entries stream=codec_name -of csv=p=0 "
            "http://node3:8080/hls/main/index.m3u8 | grep -q h264",
            timeout=90,
        )
        status = json.loads(client.succeed(f"sluice stream status main --server http://node3:8080 {api}"))
        assert status["state"] == "live", status
        assert status["origin_name"] == "node1", status

    with subtest("node 1 goes away, the publisher moves to node 2, node 3 keeps serving"):
        node1.shutdown()
        client.succeed("systemctl stop publisher-1")
        client.succeed(f"systemd-run --unit=publisher-2 {publish.format('node2')}")
        client.wait_until_succeeds(
            f"sluice stream status main --server http://node3:8080 {api} "
            "| python3 -c 'import json,sys; s=json.load(sys.stdin); "
            "assert s[\"state\"] == \"live\" and s[\"origin_name\"] == \"node2\", s'",
            timeout=120,
        )
        client.wait_until_succeeds(
            "ffprobe -v error -show_entries stream=codec_name -of csv=p=0 "
            "http://node3:8080/hls/main/index.m3u8 | grep -q h264",
            timeout=60,
        )
  '';
}
