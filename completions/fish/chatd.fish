complete -c chatd -s b -l bind -d 'Address and port to listen on; a port alone means all IPv4 addresses' -r
complete -c chatd -l label -d 'The room\'s name as the clients list it when they look for rooms on the LAN [default: this computer\'s name]. Up to 63 bytes' -r
complete -c chatd -l max-clients -d 'Most connections at once, joined or not; one more is told ERR FULL and BYE full. Each takes a thread and a descriptor (see the open-file limit, ulimit -n)' -r
complete -c chatd -l max-per-address -d 'Most connections from one computer (one address), so that no computer can take every place; one more is told ERR FULL and BYE full. This computer\'s own (loopback) are not counted' -r
complete -c chatd -l max-line -d 'Longest line a client may send, in bytes, newline included; a longer one is answered ERR TOO_LONG and skipped' -r
complete -c chatd -l max-queue -d 'Most bytes of events waiting for one member; a member further behind is dropped with LEFT <name> slow, so nobody else ever waits for it' -r
complete -c chatd -l join-timeout -d 'How long a connection may stay without JOIN before ERR TIMEOUT and BYE timeout' -r
complete -c chatd -l dead-peer-timeout -d 'A member whose computer vanished (cable pulled, power lost) is declared gone, with LEFT <name> timeout, within this time, whether it was idle or had messages queued for it (TCP keepalive and TCP_USER_TIMEOUT). At least 3s; keepalive counts whole seconds, so a bound under 10s may be overshot by a fraction of a second' -r
complete -c chatd -l shutdown-timeout -d 'On SIGTERM or SIGINT, how long to spend delivering accepted messages and BYE shutdown before exiting anyway. A second signal exits at once' -r
complete -c chatd -l rate-limit -d 'Flood control: lines a second one connection may send, 0 for no limit. A faster sender is slowed down by reading from it less (TCP backpressure), never cut off, and no line is thrown away' -r
complete -c chatd -l rate-burst -d 'Flood control: lines a connection may send at once above --rate-limit' -r
complete -c chatd -l data-dir -d 'Where the room\'s history and chatd\'s TLS certificate are kept [default: $XDG_STATE_HOME/minichat/chatd, or ~/.local/state/minichat/chatd]. Created if missing; one chatd per directory' -r -F
complete -c chatd -l history -d 'How many of the room\'s latest events are kept, across restarts, for clients that join with LAST or resume with SINCE; older ones go. 0 keeps none and uses no store' -r
complete -c chatd -l sync -d 'When the history reaches the disk: every-second (a power cut loses at most about a second; kill -9 of chatd loses nothing acknowledged), or always (before any event is sent or acknowledged, in batches)' -r -f -a "every-second\t'Flushed at least every second: a power cut loses at most about a second, `kill -9` nothing that was acknowledged'
always\t'Flushed before every event is sent or acknowledged (in batches)'"
complete -c chatd -l cluster -d 'Serve a room kept in NATS JetStream, with every chatd started with the same NATS and --room: one order, one history, names unique across servers. A comma-separated list of nats:// URLs of one NATS server or the nodes of a cluster; --data-dir then keeps only the TLS certificate' -r
complete -c chatd -l room -d 'With --cluster: which room of that NATS to serve (letters, digits, \'-\' and \'_\')' -r
complete -c chatd -l replicas -d 'With --cluster: on how many NATS nodes the room is kept (1, or 3 on a cluster of three or more). The first chatd to make the room decides' -r
complete -c chatd -l dead-server-timeout -d 'With --cluster: a chatd that stopped without a word (kill -9, a power cut) is taken for dead this long after its last sign of life; the others then record its members as LEFT <name> lost and free their names. The first chatd to make the room decides' -r
complete -c chatd -l tls-cert -d 'The TLS certificate to offer, in PEM, with its chain [default: one chatd makes on its first start, tls.pem in --data-dir, kept across restarts]' -r -F
complete -c chatd -l tls-key -d 'The private key of --tls-cert, in PEM (it may be the same file)' -r -F
complete -c chatd -l tls-bind -d 'Where TLS is spoken from the first byte, for TLS tools that know no STARTTLS (openssl s_client, socat); the minichat tools use STARTTLS on --bind [default: the --bind address with the next port, 0.0.0.0:5001]' -r
complete -c chatd -l password-file -d 'Give the room a password: the first line of FILE (without its line end; spaces count). Clients send it with PASS before JOIN, and wrong tries from one address are answered more and more slowly (up to 20 s apart) and logged. Never on the command line, where every user of this computer can read it; the file should be readable by chatd\'s user alone (chatd warns otherwise)' -r -F
complete -c chatd -l no-announce -d 'Do not announce the room on the LAN (mDNS / DNS-SD, _minichat._tcp): clients must then be given its address. A server bound to loopback is never announced; one bound to one address is announced on that address\'s interface only'
complete -c chatd -l no-tls -d 'Speak plain text only: no STARTTLS, no TLS port, no certificate'
complete -c chatd -l allow-plain -d 'With --password-file: let other computers give the password, and join, over plain text. Without it, only this computer\'s connections and encrypted ones (TLS) may: anyone on the LAN could read a password sent in clear'
complete -c chatd -s v -l verbose -d 'Log every connection and every ERR sent, too (to standard error)'
complete -c chatd -s q -l quiet -d 'Log errors only'
complete -c chatd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatd -s V -l version -d 'Print version'
