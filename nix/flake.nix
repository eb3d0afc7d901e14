# Sluice as a flake: the package, the NixOS module, a 3-node VM test and a dev shell.
# The flake lives in nix/ and builds the repository around it, so refer to it as
# `git+file:.?dir=nix` (or `github:OWNER/sluice?dir=nix`) from the repository root:
#   nix build '.?dir=nix'            nix flake check '.?dir=nix'
{
  description = "Sluice: clustered Low-Latency HLS origin/edge server";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        sluice = pkgs.callPackage ./package.nix { };
        # SDI capture (DeckLink through GStreamer).
        sluice-sdi = pkgs.callPackage ./package.nix { withSdi = true; };
        default = sluice;
      });

      overlays.default = final: _prev: {
        sluice = final.callPackage ./package.nix { };
        sluice-sdi = final.callPackage ./package.nix { withSdi = true; };
      };

      nixosModules.sluice = import ./module.nix;
      nixosModules.default = self.nixosModules.sluice;

      checks = forAllSystems (pkgs: {
        cluster = pkgs.testers.runNixOSTest (import ./tests/cluster.nix {
          sluiceModule = self.nixosModules.default;
          sluicePackage = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        });
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            cargo-nextest
            pkg-config
            ffmpeg
            gst_all_1.gstreamer
            gst_all_1.gst-plugins-base
            gst_all_1.gst-plugins-good
            gst_all_1.gst-plugins-bad
            gst_all_1.gst-plugins-ugly
            gst_all_1.gst-libav
            srt
            chromium
            nodejs_20
            python3
            etcd
            nix
          ];
        };
      });
    };
}
