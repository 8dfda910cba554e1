#!/usr/bin/env bash
# Builds the binaries the tests and the demo run against, from source through the Go module
# proxy (no Docker, no release downloads here): kube-apiserver, kube-controller-manager and
# kubectl from k8s.io/kubernetes, and helm. etcd comes from the etcd-bin-vendored crate.
#
# Binaries are cached outside the repository, keyed by version, so a fresh clone (and CI on the
# same machine) reuses them:  $ONUS_CACHE/k8s-$K8S_VERSION/bin, $ONUS_CACHE/helm-$HELM_VERSION/bin
# Prints the two bin directories on stdout as shell assignments.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
ONUS_CACHE="${ONUS_CACHE:-$HOME/.cache/onus}"
# Two cores: more parallel compile jobs only add memory pressure.
export GOFLAGS="${GOFLAGS:-} -p=2"
export CGO_ENABLED=0

log() { echo "build-control-plane: $*" >&2; }

k8s_dir="$ONUS_CACHE/k8s-$K8S_VERSION"
k8s_bin="$k8s_dir/bin"
helm_bin="$ONUS_CACHE/helm-$HELM_VERSION/bin"

build_k8s() {
  local want=(kube-apiserver kube-controller-manager kubectl) missing=()
  for b in "${want[@]}"; do [ -x "$k8s_bin/$b" ] || missing+=("$b"); done
  if [ ${#missing[@]} -eq 0 ]; then log "kubernetes $K8S_VERSION cached in $k8s_bin"; return; fi

  local mod="$k8s_dir/module"
  mkdir -p "$mod" "$k8s_bin"
  local staging="v0${K8S_VERSION#v1}" # v1.37.2 -> v0.37.2
  (
    cd "$mod"
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local paths
    # that do not exist in the module zip; a consumer must replace them with the published
    # versions. Derive the list from the real go.mod so it follows the version.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    {
      echo "module onus.dev/k8s-binaries"
      echo
      echo "go 1.26"
      echo
      echo "replace ("
      grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
      echo ")"
    } > go.mod
    log "resolving k8s.io/kubernetes $K8S_VERSION ($(grep -c '=>' go.mod) staging replaces)"
    go get "k8s.io/kubernetes@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" >&2

    local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    local ld=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    for b in "${missing[@]}"; do
      log "building $b (the first build takes many minutes on two cores)"
      go build -trimpath -ldflags "-s -w $ld" -o "$k8s_bin/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$k8s_bin/$b.tmp" "$k8s_bin/$b"
    done
  )
}

build_helm() {
  if [ -x "$helm_bin/helm" ]; then log "helm $HELM_VERSION cached in $helm_bin"; return; fi
  mkdir -p "$helm_bin"
  log "building helm $HELM_VERSION"
  GOBIN="$helm_bin" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

build_k8s
build_helm
echo "ONUS_K8S_BIN=$k8s_bin"
echo "ONUS_HELM_BIN=$helm_bin"
