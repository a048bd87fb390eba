# The one image of weft: the `weft` binary, which is the agent, the CNI
# plugin (copied to the node by `weft cni install`), the sidecar and the
# injector. Every manifest in deploy/ runs it (ghcr.io/weftnet/weft).
#
#   docker build -t ghcr.io/weftnet/weft:dev --build-arg VERSION=dev .
#
# CI does not build it (the tests run the binary directly).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static: the CNI plugin copy runs on the node's host filesystem, whatever
# libc that has.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/weft ./cmd/weft

# distroless/static: no shell, no package manager, just CA certificates and
# /etc/passwd (uid 65532 "nonroot", which the sidecar and injector run as;
# the agent runs as root with NET_ADMIN, set in its pod spec).
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/weft /usr/local/bin/weft
ENTRYPOINT ["/usr/local/bin/weft"]
