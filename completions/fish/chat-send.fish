complete -c chat-send -s s -l server -d 'The chatd to talk to, as HOST or HOST:PORT (port 5000 when none is given)' -r -f -a "(__fish_print_hostnames)"
complete -c chat-send -l retry-for -d 'After a lost connection (the server restarting, a network outage), how long to keep trying to reconnect, waiting 0.2 s between tries at first and up to 5 s later, before giving up with exit status 5. Once back, it resumes where it was: nothing missed is left unsaid, and nothing is sent twice' -r
complete -c chat-send -s n -l name -d 'The name to send as, exactly (status 4 when it is taken) [default: $CHAT_NAME or your login name; while your own chat holds that name, the name with -send after it (then -send2, ...), so the room still sees who said it]' -r
complete -c chat-send -l no-reconnect -d 'Do not reconnect: a lost connection ends it at once, with exit status 5'
complete -c chat-send -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chat-send -s V -l version -d 'Print version'
