# The tetrad runtime image: the release binary that the project's own build made, on Debian
# bookworm (the binary is built on bookworm: glibc 2.36, libstdc++ 12), as a non-root user with
# the node home on a volume. Nothing is compiled here: scripts/docker-image.sh builds the binary
# with cargo and runs `docker build` on a context holding only this file and `tetrad`.
#
#   scripts/docker-image.sh                                   → tetrad:local
#   docker run -d -v tetrad:/var/lib/tetrad tetrad:local      → tetrad run (home: the volume)
#   docker run --rm -v tetrad:/var/lib/tetrad tetrad:local keys generate --out /var/lib/tetrad/consensus_key.json
#
# Where a registry is reachable the base is pulled; where none is, scripts/docker-base.sh makes
# debian:bookworm-slim from Debian's packages first (debootstrap --variant=minbase), so this
# same file builds in both places.
FROM debian:bookworm-slim

# uid/gid 10001: node/src/ops/compose.rs (IMAGE_UID) hands seeded volumes to this user.
RUN groupadd --system --gid 10001 tetrad \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tetrad --no-create-home \
        --shell /usr/sbin/nologin tetrad \
 && mkdir -p /var/lib/tetrad \
 && chown 10001:10001 /var/lib/tetrad \
 && chmod 0700 /var/lib/tetrad

COPY tetrad /usr/local/bin/tetrad

# `tetrad run` and `tetrad health` take their home from TETRAD_HOME.
ENV TETRAD_HOME=/var/lib/tetrad
VOLUME ["/var/lib/tetrad"]
USER 10001:10001
WORKDIR /var/lib/tetrad
# p2p and RPC, as `tetrad init --p2p-listen /ip4/0.0.0.0/tcp/26000 --rpc-listen 0.0.0.0:8545`.
EXPOSE 26000 8545
# tetrad is PID 1 and stops cleanly on SIGTERM itself (docker stop): no init process needed.
STOPSIGNAL SIGTERM
# GET /health of the home's rpc_listen: 200 (progressing, idle, syncing) is healthy; 503
# (stalled, stopped) or no answer is not.
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 CMD ["tetrad", "health"]
ENTRYPOINT ["tetrad"]
CMD ["run"]
