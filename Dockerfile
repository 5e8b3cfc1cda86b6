# A minimal image that carries tpmid's plugin binaries, for an init
# container that copies them into a volume shared with spire-server or
# spire-agent (see examples/kubernetes/). The binaries are static
# (CGO_ENABLED=0), so the final image needs no libc:
#
#   docker build -t tpmid-plugins .
#   docker run --rm -v plugins:/out tpmid-plugins   # copies /plugins/* to /out
#
# The plugin_checksum values `make dist` prints are for dist/'s binaries;
# an image built here from the same commit and Go version has the same
# bytes (-trimpath, -buildvcs), and `tpmid-*-plugin --version` says which.
ARG GO_VERSION=1.26
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags='-s -w' -o /plugins/ \
        ./cmd/tpmid-server-plugin ./cmd/tpmid-agent-plugin ./cmd/tpmid

# busybox for `cp` in the init container; the binaries run in the SPIRE
# containers, not here.
FROM busybox:1.37
COPY --from=build /plugins/ /plugins/
COPY LICENSE /licenses/tpmid-LICENSE
# Non-root: the copy needs only write access to the target volume.
USER 65532:65532
ENTRYPOINT ["/bin/sh", "-c", "cp /plugins/tpmid-server-plugin /plugins/tpmid-agent-plugin /plugins/tpmid \"${PLUGIN_DIR:-/out}/\" && ls -l \"${PLUGIN_DIR:-/out}/\""]
