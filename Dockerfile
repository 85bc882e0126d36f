# orderpipe image: one static binary on a distroless base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
# go.mod replaces goka with this copy (see third_party/goka/README.md).
COPY third_party/goka/go.mod third_party/goka/go.mod
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/orderpipe ./cmd/orderpipe

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/orderpipe /orderpipe
USER nonroot
ENTRYPOINT ["/orderpipe"]
