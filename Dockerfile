# syntax=docker/dockerfile:1
# Build a static binary, then copy it into a distroless image that runs as
# an unprivileged user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/causewayhq/causeway/cmd/causeway/cli.Version=${VERSION}" \
      -o /out/causeway ./cmd/causeway

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/causeway /usr/local/bin/causeway
USER nonroot:nonroot
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/causeway"]
CMD ["edge", "-config", "/etc/causeway/causeway.yaml"]
