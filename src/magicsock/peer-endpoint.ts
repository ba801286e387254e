// The WireGuard endpoint of a magicsock peer: not an address but the peer itself. The data plane
// hands packets sent to it to magicsock, which picks UDP or DERP per packet (tailscale's
// magicsock.endpoint as a conn.Endpoint). Its raw form is 127.3.3.40:<id> (tailcfg.DerpMagicIP),
// loopback, so a packet that ever reached the kernel with it would go nowhere. WireGuard packets
// that arrive over DERP carry it as their source: the handshake rate limiter then keys on the
// sending node's key (which the DERP server vouches for), not on the address every DERP peer shares.
import { ENDPOINT_RAW_LEN, Endpoint, writeEndpointRaw } from '../net/endpoint.ts';

/** The fake IP of DERP paths in tailscale (tailcfg.DerpMagicIP). */
export const DERP_MAGIC_IP = '127.3.3.40';

/** A peer's endpoint as WireGuard sees it; `id` names the peer inside magicsock. */
export class PeerEndpoint extends Endpoint {
  /** Magicsock's peer number. */
  readonly id: number;
  /** The rate limiter's key: the peer's node key (hex) as its DERP identity. */
  private readonly source: string;
  /**
   * The UDP address the latest authenticated WireGuard packet from the peer came from, until
   * magicsock takes it (PeerPath.onHeard); undefined when none arrived since.
   */
  heard: Endpoint | undefined = undefined;

  constructor(id: number, nodeKeyHex = `peer${id}`) {
    const raw = new Uint8Array(ENDPOINT_RAW_LEN);
    writeEndpointRaw(DERP_MAGIC_IP, id & 0xffff, raw, 0);
    super(4, DERP_MAGIC_IP, id & 0xffff, raw);
    this.id = id;
    this.source = `derp:${nodeKeyHex}`;
  }

  /** The device authenticated a packet from the peer (over DERP, `from` is this endpoint: ignored). */
  override noteAuthenticatedFrom(from: Endpoint): void {
    if (from !== this) this.heard = from;
  }

  override get limiterKey(): string {
    return this.source;
  }
}
