# Shared by the demonstration: a three-host lab in network namespaces.
# server (198.18.0.1, 2001:db8::1) holds bridge br0; client (.2/::2) and outsider (.3/::3)
# hang off it with veth pairs. Only 198.18.0.0/15 and 2001:db8::/32 are used.

lab_up() {
  local tag=$1
  SERVER_NS="kd-srv-$tag"; CLIENT_NS="kd-cli-$tag"; OUTSIDER_NS="kd-out-$tag"
  for ns in "$SERVER_NS" "$CLIENT_NS" "$OUTSIDER_NS"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
  ip -n "$SERVER_NS" link add br0 type bridge
  ip -n "$SERVER_NS" link set br0 up
  ip -n "$SERVER_NS" addr add 198.18.0.1/24 dev br0
  ip -n "$SERVER_NS" addr add 2001:db8::1/64 dev br0 nodad
  local i=2
  for ns in "$CLIENT_NS" "$OUTSIDER_NS"; do
    ip link add "v$i-$tag" netns "$SERVER_NS" type veth peer name eth0 netns "$ns"
    ip -n "$SERVER_NS" link set "v$i-$tag" master br0 up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" addr add "198.18.0.$i/24" dev eth0
    ip -n "$ns" addr add "2001:db8::$i/64" dev eth0 nodad
    i=$((i + 1))
  done
}

lab_down() {
  for ns in "$SERVER_NS" "$CLIENT_NS" "$OUTSIDER_NS"; do
    [ -n "$ns" ] && ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
    [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null
  done
  return 0
}
