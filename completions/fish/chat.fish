complete -c chat -s s -l server -d 'The chatd to talk to, as HOST or HOST:PORT (port 5000 when none is given)' -r -f -a "(__fish_print_hostnames)"
complete -c chat -l retry-for -d 'After a lost connection (the server restarting, a network outage), how long to keep trying to reconnect, waiting 0.2 s between tries at first and up to 5 s later, before giving up with exit status 5. Once back, it resumes where it was: nothing missed is left unsaid, and nothing is sent twice' -r
complete -c chat -s n -l name -d 'The name to join as [default: $CHAT_NAME, or asked for; asked for too when $CHAT_NAME is taken]. With input not a terminal, the default is $CHAT_NAME or your login name, with -send after it (then -send2, ...) while your own chat holds that name, as chat-send does' -r
complete -c chat -l history -d 'On joining, show the room\'s last N events (as many as the server keeps), with their times, above a line "-- live --"; 0 shows none [default: 20 when standard output is a terminal, echo hi | chat included; 0 when it is not]' -r
complete -c chat -l no-reconnect -d 'Do not reconnect: a lost connection ends it at once, with exit status 5'
complete -c chat -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chat -s V -l version -d 'Print version'
