# NixOS module: `services.sluice`, one Sluice node. A cluster is the same module on
# each host with a different `settings.name` and, on all but the first, `join`.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.sluice;
  format = pkgs.formats.toml { };
  credentials = "/run/credentials/sluice.service";

  # The port of a listen address such as "0.0.0.0:8080" or "[::]:8080".
  portOf = addr: lib.toInt (lib.last (lib.splitString ":" addr));

  # Secrets are handed to the service by systemd (LoadCredential): read from their
  # paths at start, never copied into the Nix store.
  secretSettings =
    lib.optionalAttrs (cfg.clusterSecretFile != null) {
      cluster_secret_file = "${credentials}/cluster-secret";
    }
    // lib.optionalAttrs (cfg.tls.certFile != null) {
      tls_cert = "${credentials}/tls-cert";
      tls_key = "${credentials}/tls-key";
    }
    // lib.optionalAttrs (cfg.clusterTls.certFile != null) {
      cluster_tls_cert = "${credentials}/cluster-tls-cert";
      cluster_tls_key = "${credentials}/cluster-tls-key";
      cluster_ca = "${credentials}/cluster-ca";
    };

  settings = lib.filterAttrsRecursive (_: v: v != null) (cfg.settings // secretSettings);

  # Rendered once and checked at build time (secret files exist only at run time, so
  # their readability is checked when the service starts).
  configFile = pkgs.runCommand "sluice.toml" { } ''
    cp ${format.generate "sluice.toml" settings} $out
    ${lib.getExe cfg.package} config check --skip-files $out
  '';

  ports = with cfg.settings; {
    tcp = map portOf ([ http cluster rtmp ] ++ lib.optional ((cfg.settings.rtmps or null) != null) rtmps);
    udp = [ (portOf srt) ];
  };
  lowPort = lib.any (p: p < 1024) (ports.tcp ++ ports.udp);
in
{
  options.services.sluice = {
    enable = lib.mkEnableOption "Sluice, a clustered Low-Latency HLS origin/edge node";

    package = lib.mkOption {
      type = lib.types.package;
      default =
        if cfg.sdi.enable
        then pkgs.sluice-sdi or (pkgs.callPackage ./package.nix { withSdi = true; })
        else pkgs.sluice or (pkgs.callPackage ./package.nix { });
      defaultText = lib.literalExpression "if sdi.enable then pkgs.sluice-sdi else pkgs.sluice";
      description = "The Sluice package (the SDI build when sdi.enable is set).";
    };

    sdi.enable = lib.mkEnableOption ''
      SDI capture from this host's DeckLink cards: the package built with the `sdi`
      feature (GStreamer), and the service may open /dev/blackmagic devices'';

    settings = lib.mkOption {
      description = ''
        The node's configuration file (every key of config/sluice.toml in the
        repository; unknown keys are refused by `sluice config check` at build time).
        Secrets do not go here: see clusterSecretFile, adminTokenFile and tls.
      '';
      default = { };
      type = lib.types.submodule {
        freeformType = format.type;
        options = {
          data_dir = lib.mkOption {
            type = lib.types.str;
            default = "/var/lib/sluice";
            description = "Identity, Raft log and state, spool. Managed by systemd (StateDirectory).";
          };
          name = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "node-a";
            description = "Name shown in the dashboard and `sluice cluster status`.";
          };
          http = lib.mkOption {
            type = lib.types.str;
            default = "0.0.0.0:8080";
            description = "Viewer and admin HTTP listener (HLS, /watch, /api/v1, /metrics, dashboard).";
          };
          cluster = lib.mkOption {
            type = lib.types.str;
            default = "0.0.0.0:7000";
            description = "Raft RPC and cluster calls between nodes.";
          };
          rtmp = lib.mkOption {
            type = lib.types.str;
            default = "0.0.0.0:1935";
            description = "RTMP ingest.";
          };
          srt = lib.mkOption {
            type = lib.types.str;
            default = "0.0.0.0:9000";
            description = "SRT ingest (UDP).";
          };
          join = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "http://10.0.0.1:7000";
            description = "Cluster URL of any member to join on first start (needs clusterSecretFile).";
          };
          advertise_cluster = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "http://10.0.0.2:7000";
            description = "URL other nodes reach this node's cluster listener at.";
          };
          advertise_http = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "http://10.0.0.2:8080";
            description = "URL other nodes pull this node's playlists and objects from.";
          };
        };
      };
    };

    clusterSecretFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/run/keys/sluice-cluster-secret";
      description = ''
        File with the cluster secret (a member's data_dir/cluster.secret), read on first
        start. Required to join a cluster; a node that starts one makes its own when unset.
      '';
    };

    adminTokenFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/run/keys/sluice-admin-token";
      description = ''
        File with this node's admin API token, installed as data_dir/admin.token when
        there is none yet. Unset: the node makes a random one on first start.
      '';
    };

    tls = {
      certFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "PEM certificate chain for the HTTP listener (HTTP/2 with TLS).";
      };
      keyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "PEM private key for tls.certFile.";
      };
    };

    clusterTls = {
      certFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = ''
          PEM certificate of this node, signed by clusterTls.caFile, for mutual TLS on
          the cluster listener (its name or address must match the cluster URL other
          nodes use). With it, set settings.advertise_cluster and join to https:// URLs.
        '';
      };
      keyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "PEM private key for clusterTls.certFile.";
      };
      caFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "PEM certificate of the cluster CA that signs every node's certificate.";
      };
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the HTTP, cluster, RTMP (and RTMPS) TCP ports and the SRT UDP port.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.tls.certFile == null) == (cfg.tls.keyFile == null);
        message = "services.sluice.tls: set both certFile and keyFile, or neither";
      }
      {
        assertion = let f = cfg.clusterTls; in
          (f.certFile == null) == (f.keyFile == null) && (f.certFile == null) == (f.caFile == null);
        message = "services.sluice.clusterTls: set certFile, keyFile and caFile, or none";
      }
      {
        assertion = cfg.settings.join == null || cfg.clusterSecretFile != null;
        message = "services.sluice.settings.join needs services.sluice.clusterSecretFile";
      }
      {
        assertion = cfg.settings.data_dir == "/var/lib/sluice";
        message = "services.sluice.settings.data_dir is managed by systemd (StateDirectory=sluice)";
      }
    ];

    networking.firewall = lib.mkIf cfg.openFirewall {
      allowedTCPPorts = ports.tcp;
      allowedUDPPorts = ports.udp;
    };

    environment.systemPackages = [ cfg.package ];

    systemd.services.sluice = {
      description = "Sluice live streaming node";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = {
        # READY=1 once the node belongs to a cluster with a leader and every listener
        # is up; STOPPING=1 when it begins to shut down.
        Type = "notify";
        NotifyAccess = "main";
        ExecStartPre = [
          "${lib.getExe cfg.package} config check ${configFile}"
        ] ++ lib.optional (cfg.adminTokenFile != null) (pkgs.writeShellScript "sluice-admin-token" ''
          if [ ! -e /var/lib/sluice/admin.token ]; then
            install -m 0600 ${credentials}/admin-token /var/lib/sluice/admin.token
          fi
        '');
        ExecStart = "${lib.getExe cfg.package} serve --config ${configFile}";
        Restart = "on-failure";
        RestartSec = 2;
        TimeoutStopSec = 30;
        LoadCredential =
          lib.optional (cfg.clusterSecretFile != null) "cluster-secret:${cfg.clusterSecretFile}"
          ++ lib.optional (cfg.adminTokenFile != null) "admin-token:${cfg.adminTokenFile}"
          ++ lib.optionals (cfg.tls.certFile != null) [
            "tls-cert:${cfg.tls.certFile}"
            "tls-key:${cfg.tls.keyFile}"
          ]
          ++ lib.optionals (cfg.clusterTls.certFile != null) [
            "cluster-tls-cert:${cfg.clusterTls.certFile}"
            "cluster-tls-key:${cfg.clusterTls.keyFile}"
            "cluster-ca:${cfg.clusterTls.caFile}"
          ];

        DynamicUser = true;
        StateDirectory = "sluice";
        StateDirectoryMode = "0700";
        WorkingDirectory = "/var/lib/sluice";
        UMask = "0077";
        LimitNOFILE = 65536;

        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        # DeckLink cards are character devices under /dev/blackmagic.
        PrivateDevices = !cfg.sdi.enable;
        DeviceAllow = lib.optional cfg.sdi.enable "/dev/blackmagic rw";
        NoNewPrivileges = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        # GStreamer's ORC compiles its video and audio kernels at run time.
        MemoryDenyWriteExecute = !cfg.sdi.enable;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
        CapabilityBoundingSet = if lowPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        AmbientCapabilities = lib.optional lowPort "CAP_NET_BIND_SERVICE";
      };
    };
  };
}
