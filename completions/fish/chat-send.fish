complete -c chat-send -s s -l server -d 'The chatd to talk to, as HOST or HOST:PORT (port 5000 when none is given)' -r
complete -c chat-send -s n -l name -d 'The name to send as [default: your login name]' -r
complete -c chat-send -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chat-send -s V -l version -d 'Print version'
