
use builtin;
use str;

set edit:completion:arg-completer[orproxy] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'orproxy'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'orproxy'= {
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run the OpenAI-compatible proxy (http://127.0.0.1:3000/v1 by default)'
            cand keys 'Add, list, reactivate and remove OpenRouter API keys'
            cand usage 'Show the requests, errors, tokens and cost of each day, from the store'
            cand generate 'Write shell completions and man pages'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'orproxy;serve'= {
            cand --host 'Address to listen on'
            cand --port 'Port to listen on (also from PORT, as the original Node server read it) [default: 3000]'
            cand --upstream 'OpenRouter API base that requests are forwarded to'
            cand --max-attempts 'Upstream attempts per request, each on the best available key'
            cand --max-failures 'Consecutive failures after which a key is disabled'
            cand --max-wait 'Seconds a request may wait for a cooling key (or a model''s back-off) before orproxy answers 429'
            cand --workers 'Worker threads [default: the number of CPU cores]'
            cand --max-body 'Largest request body accepted (B, KiB, MiB, GiB, KB, MB, GB)'
            cand --connect-timeout 'Seconds to establish a connection (and TLS) to the upstream'
            cand --headers-timeout 'Seconds to wait for the upstream''s response headers (LLMs can take minutes)'
            cand --idle-timeout 'Seconds of silence allowed between two chunks of an upstream body; a healthy stream has no total limit'
            cand --keep-alive 'Seconds an idle client connection is kept open between two requests'
            cand --sse-keepalive 'Seconds a stream may be held before its first content event (while orproxy can still retry it on another key) before SSE comments keep the client''s connection alive, and between two of them; 0: never send them'
            cand --body-timeout 'Seconds a client has to send a whole request body, however steadily it sends (besides 30 s of silence at most)'
            cand --shutdown-grace 'Seconds in-flight requests get to finish after SIGINT/SIGTERM'
            cand --reprobe-interval 'Seconds between background GET /key re-checks of a key disabled by failures (0: never)'
            cand --referer 'HTTP-Referer sent to OpenRouter for app attribution, unless the client sent its own'
            cand --title 'X-Title sent to OpenRouter for app attribution, unless the client sent its own'
            cand --admin-token 'Token that turns the admin API (/admin/keys) on; send it as `Authorization: Bearer TOKEN`. Prefer the environment variable: command lines are visible to other local users'
            cand --client-token 'Only clients sending this bearer token may use /v1 and /metrics (repeatable; the environment variable is comma-separated). Without any, every token is accepted'
            cand --log-dir 'Directory of the daily log files requests-, errors- and keys-YYYY-MM-DD.log [default: $XDG_STATE_HOME/orproxy/logs, i.e. ~/.local/state/orproxy/logs]'
            cand --log-retention-days 'Days the log files are kept; 0 keeps them forever (also from LOG_RETENTION_DAYS, as the original Node server read it) [default: 14]'
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand --allow-open 'Listen on a non-loopback address without client tokens: an open proxy that anyone who reaches it can use to spend your keys'' quota'
            cand --log-bodies 'Also write message contents (request bodies, non-streamed response bodies, streamed text) to the request log. Off by default: they are your users'' private data'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'orproxy;keys'= {
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin'
            cand list 'Show every key with its status, cooldown and failures'
            cand reactivate 'Put disabled or cooling keys back into rotation'
            cand remove 'Delete keys from the store'
            cand check 'Ask OpenRouter about keys (GET /key, which costs no quota) and record what it says'
            cand migrate 'Copy every key, with its state and the accounts'' counts, from one store to another'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'orproxy;keys;add'= {
            cand --key 'A key to add (repeatable). Without it, keys are read from a hidden prompt or stdin'
            cand --label 'A label for the added keys'
            cand --upstream 'OpenRouter API base used to verify keys'
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand --no-verify 'Do not check the keys with OpenRouter before adding them'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'orproxy;keys;list'= {
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand --json 'Print a JSON array instead of a table'
            cand -w 'Redraw the table every second (like `watch`) with cooldown countdowns; Ctrl-C quits'
            cand --watch 'Redraw the table every second (like `watch`) with cooldown countdowns; Ctrl-C quits'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'orproxy;keys;reactivate'= {
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand --all 'Reactivate every key'
            cand --forget-quota 'Also forget orproxy''s count of today''s :free requests of these keys'' accounts (when you know better, e.g. after buying credits)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'orproxy;keys;remove'= {
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'orproxy;keys;check'= {
            cand --upstream 'OpenRouter API base'
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand --json 'Print a JSON array instead of a table'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'orproxy;keys;migrate'= {
            cand --from 'The store to copy from: a JSON file or a redis:// URL'
            cand --to 'The store to copy to: a JSON file or a redis:// URL'
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'orproxy;keys;help'= {
            cand add 'Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin'
            cand list 'Show every key with its status, cooldown and failures'
            cand reactivate 'Put disabled or cooling keys back into rotation'
            cand remove 'Delete keys from the store'
            cand check 'Ask OpenRouter about keys (GET /key, which costs no quota) and record what it says'
            cand migrate 'Copy every key, with its state and the accounts'' counts, from one store to another'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'orproxy;keys;help;add'= {
        }
        &'orproxy;keys;help;list'= {
        }
        &'orproxy;keys;help;reactivate'= {
        }
        &'orproxy;keys;help;remove'= {
        }
        &'orproxy;keys;help;check'= {
        }
        &'orproxy;keys;help;migrate'= {
        }
        &'orproxy;keys;help;help'= {
        }
        &'orproxy;usage'= {
            cand --by 'One row per day and key, account or model'
            cand --since 'The first day shown: a UTC date (YYYY-MM-DD), or the last N days, today included (7d) [default: every day kept]'
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand --json 'Print a JSON array of rows instead of a table'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'orproxy;generate'= {
            cand --out-dir 'Directory that receives completions/ and man/'
            cand --store 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]'
            cand --redis-prefix 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'orproxy;help'= {
            cand serve 'Run the OpenAI-compatible proxy (http://127.0.0.1:3000/v1 by default)'
            cand keys 'Add, list, reactivate and remove OpenRouter API keys'
            cand usage 'Show the requests, errors, tokens and cost of each day, from the store'
            cand generate 'Write shell completions and man pages'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'orproxy;help;serve'= {
        }
        &'orproxy;help;keys'= {
            cand add 'Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin'
            cand list 'Show every key with its status, cooldown and failures'
            cand reactivate 'Put disabled or cooling keys back into rotation'
            cand remove 'Delete keys from the store'
            cand check 'Ask OpenRouter about keys (GET /key, which costs no quota) and record what it says'
            cand migrate 'Copy every key, with its state and the accounts'' counts, from one store to another'
        }
        &'orproxy;help;keys;add'= {
        }
        &'orproxy;help;keys;list'= {
        }
        &'orproxy;help;keys;reactivate'= {
        }
        &'orproxy;help;keys;remove'= {
        }
        &'orproxy;help;keys;check'= {
        }
        &'orproxy;help;keys;migrate'= {
        }
        &'orproxy;help;usage'= {
        }
        &'orproxy;help;generate'= {
        }
        &'orproxy;help;help'= {
        }
    ]
    $completions[$command]
}
