# A small runtime image of tetrad.
#   docker build -t tetrad .
#   docker run --rm -v $PWD/home:/home/tetrad tetrad run --home /home/tetrad
FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends clang libclang-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tetrad-node --bin tetrad

FROM debian:bookworm-slim
RUN useradd --create-home --uid 10001 tetrad
COPY --from=build /src/target/release/tetrad /usr/local/bin/tetrad
USER tetrad
EXPOSE 26600 26601
ENTRYPOINT ["tetrad"]
