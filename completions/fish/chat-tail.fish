complete -c chat-tail -s s -l server -d 'The chatd to talk to, as HOST or HOST:PORT (port 5000 when none is given); or several, separated by commas (a:5000,b:5000), all serving the one room: the first that answers as a chat server is used, and after a lost connection the others are tried in turn, starting with the one after the server lost. [default: the room announced on the LAN, looked for during 1.5 s: used when it is the only one; with several, chat asks which and the others stop with the list, exit status 7; with none, exit status 3]' -r -f -a "(__fish_print_hostnames)"
complete -c chat-tail -l retry-for -d 'After a lost connection (the server restarting, a network outage), how long to keep trying to reconnect, waiting 0.2 s between tries at first and up to 5 s later, before giving up with exit status 5. Once back, it resumes where it was: nothing missed is left unsaid, and nothing is sent twice' -r
complete -c chat-tail -l name -d 'The name to join as [default: $CHAT_NAME or your login name, with -tail after it, so it never collides with your own chat]' -r
complete -c chat-tail -s n -l lines -d 'First print the room\'s last N events (as many as the server keeps), as tail -n does; then the live ones' -r
complete -c chat-tail -l since -d 'First print every event after this position, then the live ones: a script that kept the position of the last event it handled ("epoch" and "seq" in --json) misses nothing in between. When the server no longer keeps them all, it says so on standard error' -r
complete -c chat-tail -s c -l count -d 'Exit after N messages' -r
complete -c chat-tail -l no-reconnect -d 'Do not reconnect: a lost connection ends it at once, with exit status 5'
complete -c chat-tail -l raw -d 'Print the protocol lines as they come (MSG Ana hola)'
complete -c chat-tail -l json -d 'Print one JSON object per line: {"event":"msg","from":"Ana","text":"hola","seq":42, "time":"2026-11-30T13:40:01.123Z","epoch":"k3f9a"}, with the event\'s position (a number) in its history (epoch) and the server\'s time (UTC, RFC 3339); events that the server no longer keeps show as {"event":"missed","count":N} (null when nobody can say how many)'
complete -c chat-tail -s m -l messages-only -d 'Print messages only, not joins and leaves'
complete -c chat-tail -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chat-tail -s V -l version -d 'Print version'
