// Runs matrix-js-sdk's SlidingSync (simplified sliding sync, MSC4186) as Element Web's
// labs flag does, and prints what the client sees as JSON lines: "ready" with its
// rooms after the first answer, then each live "message" and "to_device" event.
// Arguments: sdk entry file, base URL, user id, device id, access token.
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

const [sdkEntry, baseUrl, userId, deviceId, accessToken] = process.argv.slice(2);
const sdk = await import(pathToFileURL(sdkEntry).href);
const ss = await import(pathToFileURL(join(dirname(sdkEntry), "sliding-sync.js")).href);
const say = (kind, data) => console.log(JSON.stringify({ kind, ...data }));

const client = sdk.createClient({ baseUrl, userId, deviceId, accessToken });
const requiredState = [
    ["m.room.name", ""],
    ["m.room.encryption", ""],
    ["m.room.create", ""],
    ["m.room.member", "$LAZY"],
    ["m.room.member", "$ME"],
    ["m.room.power_levels", ""],
    ["m.room.join_rules", ""],
];
const lists = new Map([
    ["all", { ranges: [[0, 19]], timeline_limit: 5, required_state: requiredState }],
]);
const slidingSync = new ss.SlidingSync(
    baseUrl,
    lists,
    { timeline_limit: 5, required_state: requiredState },
    client,
    10000,
);
client.on(sdk.RoomEvent.Timeline, (event, room, toStartOfTimeline) => {
    if (!toStartOfTimeline && event.getType() === "m.room.message") {
        say("message", { room: room.roomId, body: event.getContent().body });
    }
});
client.on(sdk.ClientEvent.ToDeviceEvent, (event) => {
    say("to_device", { type: event.getType(), sender: event.getSender(), content: event.getContent() });
});
let ready = false;
slidingSync.on(ss.SlidingSyncEvent.Lifecycle, (state, resp, err) => {
    if (err) say("error", { message: String(err) });
    if (!ready && state === ss.SlidingSyncState.Complete && resp) {
        ready = true;
        const rooms = client.getRooms().map((room) => ({
            id: room.roomId,
            name: room.name,
            encrypted: room.hasEncryptionStateEvent(),
            messages: room
                .getLiveTimeline()
                .getEvents()
                .filter((e) => e.getType() === "m.room.message")
                .map((e) => e.getContent().body),
        }));
        say("ready", { count: resp.lists.all?.count, rooms });
    }
});
await client.startClient({ slidingSync });
