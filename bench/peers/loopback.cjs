// Preloaded (`node --require`) by bench/bench_peers.py into the npm peers: a server told to listen on a
// bare port (supergateway has no host option and would listen on every interface) listens on 127.0.0.1.
"use strict";
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && typeof args[1] !== "string") {
    args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
