"""Topic grammars: the intents of each built-in topic, their sentence templates and responses.

Every grammar text follows the grammar syntax of the synthetic generators: ``%[intent] ->
response`` headers, ``~[alias]`` and ``@[slot]`` definitions, bodies indented by four spaces,
``(a|b)`` inline alternatives and ``[optional words]``. Each topic text is parsed together with
``COMMON_GRAMMAR``, so it may use the aliases and slots defined there; ``OUT_OF_SCOPE_GRAMMAR``
is parsed with ``COMMON_GRAMMAR`` alone.

A header line that would pass the line length ends with a backslash: inside these (non-raw)
strings Python removes the backslash and the line break, so the header is one line of text.
"""

from __future__ import annotations

COMMON_GRAMMAR = """\
# Shared aliases and slots, usable by every topic.
~[please]
    please
    pls
    plz
~[help_me]
    can you help me
    could you help me
    please help me
    i need help to
    can you show me how to
    i need someone to help me
~[i_want]
    i want to
    i'd like to
    i would like to
    i need to
    i wanna
    i have to
~[how_do_i]
    how do i
    how can i
    how would i
    what's the way to
    what do i need to do to
    how am i supposed to
~[can_i]
    can i
    could i
    is it possible to
    am i able to
    may i
~[can_you]
    can you
    could you
    would you
    would you be able to
    is there any way you can
~[why]
    why
    why exactly
    why on earth
~[tell_me]
    can you tell me
    could you tell me
    do you know
    i'd like to know
    i was wondering
    please let me know
~[i_think]
    i think
    i believe
    it looks like
    it seems
~[noticed]
    i noticed
    i just saw
    i can see
    i found
~[recently]
    yesterday
    last week
    a few days ago
    earlier today
    on monday
    two weeks ago
    last month
    this morning
    the other day
~[my_card]
    my card
    my debit card
    my credit card
    my bank card
    my visa card
    my mastercard
~[my_account]
    my account
    my profile
    my user account
~[order_ref]
    my order
    my last order
    my recent order
    order @[order_number]
    order number @[order_number]
    the order i placed ~[recently]
~[app]
    the app
    your app
    the mobile app
~[site]
    the website
    your website
    your site
~[app_or_site]
    ~[app]
    ~[site]
~[money]
    money
    funds
    cash
~[frustrated]
    this is really frustrating
    i'm getting fed up
    this is ridiculous
    i'm honestly annoyed
    this is the second time this has happened
    i'm not happy about this
~[asap]
    as soon as possible
    asap
    right away
    today if possible
~[phone]
    my phone
    my iphone
    my android phone
    my tablet
    my new phone
~[email]
    my email
    my email address
    the email address on my account
@[order_number]
    48213
    A-10293
    ORD-55812
    772019
    B-3381
    90417
    C-66120
    31579
@[product]
    headset
    coffee maker
    phone case
    winter jacket
    blender
    desk lamp
    yoga mat
    bluetooth speaker
    backpack
    smartwatch
    air fryer
    office chair
    hoodie
    kettle
@[amount]
    $20
    $49.99
    $120
    $5
    $15.50
    50 dollars
    200 euros
    €35
    £80
    £12.99
@[merchant]
    Amazon
    Netflix
    Uber
    Spotify
    Walmart
    Starbucks
    eBay
    Airbnb
    Lyft
    DoorDash
    Target
    Costco
@[country]
    Spain
    Germany
    Japan
    Mexico
    Canada
    the UK
    France
    Italy
    Australia
    Brazil
    India
    Poland
@[currency]
    euros
    dollars
    pounds
    yen
    swiss francs
    canadian dollars
    mexican pesos
    polish zloty
@[time_span]
    two days
    a week
    ten days
    three weeks
    over a month
    five days
    48 hours
    almost two weeks
@[carrier]
    UPS
    FedEx
    DHL
    USPS
    Royal Mail
    Canada Post
"""

_BILLING = """\
# Billing: unrecognised charges, double charges, invoices, fees and how bills are sent.
~[charge]
    charge
    payment
    transaction
    debit
~[bill]
    bill
    invoice
    statement
    monthly statement
~[bills]
    bills
    invoices
    statements
~[month_ref]
    last month
    january
    march
    the past three months
    this quarter
    last year
@[fee_name]
    late fee
    service fee
    processing fee
    maintenance fee
    foreign transaction fee
    monthly account fee
    currency conversion fee
    convenience fee
    reactivation fee

%[dispute_charge] -> I'm sorry about the unexpected charge. I've opened a dispute for it, \
and we'll review the transaction and update you within 5 business days.
    i don't recognise a ~[charge] of @[amount] on my ~[bill]
    ~[noticed] a ~[charge] from @[merchant] on my ~[bill] that i never made
    ~[i_want] dispute a ~[charge] on my latest ~[bill]
    who is @[merchant] and why did they take @[amount] from me?
    i was charged @[amount] for something i never bought
    ~[can_i] challenge a [pending] ~[charge] that isn't mine?
    i never authorised this @[amount] ~[charge], ~[frustrated]
    (how do i|where can i) report an incorrect ~[charge] on my ~[bill]?
    there's a purchase at @[merchant] on my ~[bill] and it wasn't me
    please remove the @[amount] ~[charge] i didn't agree to
    what is this @[amount] ~[charge] from @[merchant]? i've never shopped there
    ~[i_think] i've been overcharged on my (latest|last|current) ~[bill]
    the total on my ~[bill] is wrong, i was charged @[amount] instead of the agreed price
    i want to contest a ~[charge] i don't know anything about
    that @[merchant] ~[charge] isn't something i signed up for, can you look into it?

%[duplicate_charge] -> I'm sorry you were charged twice. I've asked for the duplicate \
to be reversed, and it should be back in your account within 3 to 5 business days.
    i was charged twice for the same (purchase|order|thing)
    you took @[amount] from me two times
    there are two identical charges of @[amount] on my ~[bill]
    ~[why] was i billed twice this month?
    my ~[bill] lists the same ~[charge] (two|three) times
    i only paid once but the money left my account twice
    (it looks like|it seems) i got double charged for ~[order_ref]
    the @[merchant] ~[charge] went through twice, can you reverse one of them?
    please cancel the duplicate ~[charge] on my ~[bill]
    i've been charged twice for my monthly plan, ~[frustrated]
    how do i get the second ~[charge] of @[amount] back?
    ~[my_card] was debited twice for a single purchase ~[recently]
    is it normal to see the same ~[charge] two times or is that a mistake?
    you billed me double even though i only ordered once
    the same amount was taken (twice|two times) on the same day

%[request_invoice] -> Of course! You can download all your invoices under Account > Billing, \
and I've also emailed you a copy of the one you asked for.
    ~[i_want] get a copy of my ~[bill] for ~[month_ref]
    where can i download my ~[bills]?
    ~[can_you] send me an invoice for ~[order_ref]?
    i need a receipt for my last payment for my expense report
    how do i get a vat invoice with my company name on it?
    my accountant needs all my ~[bills] from ~[month_ref]
    ~[can_i] get a pdf of my ~[bill]?
    i lost the receipt for ~[order_ref], can i get another one?
    please email me the invoice for the @[product] i bought
    where do i find past ~[bills] in ~[app_or_site]?
    i need an itemised ~[bill] for ~[month_ref]
    is it possible to add my business address to my ~[bills]?
    ~[help_me] find the invoice for my subscription payment
    could i have a printed copy of my ~[bill] sent to me?

%[explain_fee] -> Happy to explain. You can see every fee and when it applies in our fee \
table under Account > Fees, and I can walk you through any fee on your bill.
    what is this @[fee_name] on my ~[bill]?
    ~[why] am i being charged a @[fee_name]?
    i don't understand the @[fee_name] you (added|charged me|put on my account)
    ~[can_you] explain the fees on my (latest|last|current) ~[bill]?
    what does the @[fee_name] actually cover?
    nobody told me there would be a @[fee_name]
    is the @[fee_name] charged every month?
    how can i avoid paying the @[fee_name] in future?
    ~[can_you] waive the @[fee_name] [just] this time?
    where do i find a full list of your fees?
    i got hit with a @[fee_name] and i want to know why
    this @[fee_name] was never mentioned when i signed up
    how much is the @[fee_name] and when does it apply?
    what are all these extra fees on my ~[bill] for?

%[paperless_billing] -> Sure! I've switched you to paperless billing, so from now on \
your bills will arrive by email and in the app instead of by post.
    ~[i_want] go paperless [for my ~[bills]]
    ~[can_you] stop sending me paper ~[bills][ in the post]?
    how do i switch to (e-bills|online billing|email billing)?
    i'd prefer to get my ~[bills] by email instead of by post
    ~[please?] turn off paper ~[bills] for ~[my_account]
    i stopped getting ~[bills] in the mail, did you switch me to paperless?
    ~[can_i] get both a paper copy and an email copy of my ~[bill]?
    where do i change how i receive my ~[bills][ in ~[app_or_site]]?
    i want my ~[bills] emailed to me, not mailed
    how do i turn on electronic ~[bills] in ~[app_or_site]?
    i'd like to start receiving printed ~[bills] again
    my ~[bills] keep arriving by post even though i chose email
    (set up|switch on|turn on) paperless billing (for me|on ~[my_account]) ~[please?]
    is there a way to only get digital ~[bills]?
"""

_SUPPORT = """\
# Support: reaching a person, opening hours, complaints, feedback and open tickets.
~[human]
    a real person
    a human
    a live agent
    an actual person
    a customer service representative
    someone from your team
~[talk]
    talk to
    speak to
    chat with
    speak with
@[ticket_number]
    4471902
    CS-20931
    88123
    T-551207
    1093348
@[weekend_day]
    saturday
    sunday
    saturdays
    sundays
    the weekend
    bank holidays

%[talk_to_human] -> Of course. I'm transferring you to a member of our support team now; \
the current wait is just a few minutes.
    ~[i_want] ~[talk] ~[human]
    ~[can_i] ~[talk] ~[human]?
    is there ~[human] i can ~[talk]?
    connect me with a live agent ~[please?]
    i don't want to talk to a bot
    how do i reach a customer service representative?
    get me a human ~[please?]
    transfer me to someone who can actually help
    what's your phone number? i'd rather call someone
    are you a robot? i need ~[human]
    put me through to (an agent|a representative|customer service|the help desk)
    this chat isn't helping, let me ~[talk] ~[human]
    i'd prefer to explain my problem to ~[human]
    stop the automated replies and get me ~[human]

%[support_hours] -> Our chat support is available 24/7, and our phone line is open \
Monday to Friday from 8 am to 8 pm.
    what are your (opening|business|office) hours[ today]?
    ~[tell_me] when (customer support|your help desk|the support team) is available
    is your (support team|call centre|live chat) (open|working|available) on @[weekend_day]?
    what time does your (call centre|phone line|support line) close[ today]?
    are you (open|available) 24/7?
    ~[tell_me] until what time i can (call|reach|phone) you [today]
    is the helpline (open|available) on (public holidays|christmas day|new year's day)?
    ~[tell_me] when i can reach someone by (phone|live chat)
    what hours is live chat (staffed|open|available)[ on @[weekend_day]]?
    do you offer support (at night|late in the evening|overnight)?
    what time do your (agents|phone lines|support staff) (start|open) in the morning?
    is anyone (there|available) right now or are you closed?
    can i get help on @[weekend_day] or only during the week?
    what are the hours of your (customer service|help desk|support line)[ on @[weekend_day]]?

%[file_complaint] -> I'm sorry about your experience. I've logged a formal complaint, \
and our complaints team will reply within 5 business days.
    ~[i_want] (make|file|submit|lodge) a formal complaint
    ~[how_do_i] (file|make|raise) a complaint about your (service|staff|company)?
    i'm very unhappy with the way i was treated by your (staff|agent|team)
    your agent was (rude|dismissive|unprofessional) to me on the phone ~[recently]
    i want to escalate this, the service has been (terrible|awful|a disaster)
    where do i send a (written|formal) complaint[ about ~[app_or_site]]?
    i've waited (weeks|months|@[time_span]) and nobody has fixed my problem, i want to complain
    who can i complain to about (this|your service|the way i was treated)?
    ~[can_you] (register|log|record) a complaint on my behalf?
    the service i received was unacceptable and i want it on record
    i'm writing to complain about (the delays|the poor communication|your staff|how this went)
    is there a complaints department[ i can contact]?
    i want my complaint to go to (management|a manager|someone senior) ~[asap]
    this is the worst customer service i've ever had, ~[frustrated]

%[give_feedback] -> Thank you for your feedback! I've passed it on to the team, \
and it really helps us improve.
    i just wanted to say your (service|support|team) (was|has been) great
    i have a (suggestion|small idea|feature request) for ~[app_or_site], who do i tell?
    where can i (leave|send|give) (feedback|a review|suggestions)?
    you should add (a wishlist|better filters|a way to export my history|more payment options)
    the agent who helped me ~[recently] was (fantastic|really kind|super helpful)
    i love the new (update|design|look of ~[app]), great work
    it would be nice if ~[app] let me (save favourites|sort my history|set reminders)
    ~[can_i] give some feedback about my (experience|last order|chat with your agent)?
    please pass on my thanks to (the team|everyone who helped|your support staff)
    here's an idea to improve your (checkout|search|product pages)
    i'd like to leave a (review|rating|testimonial)
    i want to share some (thoughts|feedback|ideas) on ~[app_or_site]
    just a quick compliment for your (support team|delivery drivers|staff)
    i'm really impressed with how (fast|well) you sorted things out

%[ticket_status] -> Let me check. Your ticket is still open and our team is working on it; \
you'll get an email as soon as there's an update.
    what's the status of my support (ticket|request|case)?
    i opened a (case|ticket) ~[recently], (any update|is there any news)?
    has anyone looked at my (ticket|case|request) yet?
    i'm following up on (ticket|case|request) @[ticket_number]
    is my request @[ticket_number] still being worked on?
    i haven't heard back about my (case|ticket|complaint) [yet]
    nobody has replied to the ticket i submitted [~[recently]]
    ~[can_you] check on my open support (request|ticket)?
    how long until my ticket is (resolved|closed|dealt with)?
    any news on the (issue|problem) i reported ~[recently]?
    my case number is @[ticket_number], where are we with it?
    was my support (request|ticket) closed without a reply?
    i (emailed|wrote to) you about my problem @[time_span] ago and got no answer
    ~[tell_me] if there's an update on case @[ticket_number]
"""

_SHIPPING = """\
# Shipping: tracking, delivery address changes, shipping costs, missing deliveries, abroad.
~[package]
    package
    parcel
    delivery
    shipment
~[door]
    at my door
    in my mailbox
    on my porch
    at reception
    in my building

%[track_package] -> Your package is on its way. You can follow it with the tracking link \
in your shipping confirmation email.
    where is my ~[package]?
    ~[can_you] tell me where ~[order_ref] is right now?
    how do i track my ~[package]?
    when will my ~[package] arrive?
    what's the estimated delivery date for ~[order_ref]?
    my tracking number isn't showing any updates
    i'd like a tracking link for my ~[package]
    has ~[order_ref] shipped yet?
    is my ~[package] out for delivery today?
    the tracking has said in transit for @[time_span], where is it now?
    ~[can_i] see the delivery status of ~[order_ref]?
    i'm still waiting for my ~[package], how much longer will it take?
    which courier is bringing my ~[package]?
    i ordered the @[product] ~[recently] and it hasn't arrived yet
    is my ~[package] from @[carrier] going to come (today|tomorrow|this week)?

%[change_delivery_address] -> No problem. I've updated the delivery address on your order; \
please check the confirmation email to make sure it's right.
    ~[i_want] change the delivery address for ~[order_ref]
    i entered the wrong shipping address, can i fix it?
    ~[can_you] send my ~[package] to a different address?
    i've moved, please update the address on ~[order_ref]
    is it too late to change where my order is being delivered?
    please redirect my ~[package] to my work address
    ~[how_do_i] edit the shipping address after ordering?
    i made a typo in my street name on ~[order_ref]
    ~[can_i] have it delivered to my (parents' house|office|neighbour) instead?
    the address on my order is my old one
    i'd like to reroute the ~[package] to another city
    my apartment number is missing from the delivery address
    ship it to a pickup point instead of my home ~[please?]
    the postcode on ~[order_ref] is wrong, can you correct it?

%[shipping_cost] -> Standard shipping is free on orders over $50, and express delivery \
is available at checkout for an extra fee.
    how much (is|do you charge for) (shipping|delivery|postage)?
    do you offer free (delivery|shipping)?
    what (shipping|delivery) options do you have?
    is there (an express|a faster|a priority) delivery option?
    how much does (next day|express|weekend) delivery cost?
    what's the minimum order for free (shipping|delivery)?
    ~[why] is the (shipping|delivery fee|postage) so expensive?
    ~[can_i] pay extra to get (it|my order) faster?
    how long does standard (shipping|delivery) take[ to my (house|address)]?
    are there cheaper delivery options[ than express]?
    what would it cost to (ship|deliver|send) the @[product] to my (house|address|office)?
    do you have same day delivery in my (area|city|postcode)?
    i thought shipping was free on orders over @[amount]?
    is (delivery|shipping) included in the price or is it extra?

%[delivered_not_received] -> I'm sorry your package hasn't reached you. I've opened an \
investigation with the carrier, and we'll send a replacement or refund if it isn't found.
    the tracking says delivered but i never got my ~[package]
    my ~[package] was marked as delivered but it's not here
    i didn't receive anything even though it shows delivered
    the driver says they left it but there's nothing ~[door]
    someone must have stolen my ~[package] from my porch
    it says delivered ~[recently] but i have no ~[package]
    i checked with my neighbours and nobody has my ~[package]
    ~[app] shows it was delivered but it never showed up
    the delivery photo isn't even my door
    i got a delivery notification but no ~[package]
    where did the driver leave my ~[package]? i can't find it anywhere
    my ~[package] is missing even though @[carrier] says it was delivered
    ~[order_ref] is marked as delivered, but there's nothing ~[door]
    i was home all day and no ~[package] came, but it says delivered

%[international_shipping] -> Yes, we ship to most countries. Delivery usually takes 7 to \
14 business days, and any import duties are shown at checkout.
    do you ship to @[country]?
    ~[can_i] order from @[country]?
    do you deliver internationally?
    how long does shipping to @[country] take?
    will i have to pay customs fees if i order from abroad?
    is there international shipping available?
    i live in @[country], can you send my order here?
    what are the import duties for @[country]?
    which countries do you deliver to?
    ~[can_i] get the @[product] shipped overseas?
    how much does it cost to ship to @[country]?
    i'm abroad right now, can you deliver to me here?
    do you ship outside the country?
    can my family in @[country] order from your store?
"""

_ORDERS = """\
# Orders: cancelling, changing an order, missing confirmations, wrong items, restocks.
~[cancel]
    cancel
    call off
    stop
~[detail]
    size
    colour
    model
    quantity
~[package_word]
    package
    parcel
    box
    delivery
~[sold_out]
    out of stock
    sold out
    unavailable

%[cancel_order] -> I've cancelled your order, and you'll get a confirmation email shortly. \
Any payment will be refunded within 3 to 5 business days.
    ~[i_want] ~[cancel] ~[order_ref]
    please cancel my order
    how do i cancel an order i just placed?
    is it too late to cancel ~[order_ref]?
    i changed my mind about the @[product] i just ordered, please cancel it
    i ordered by mistake, ~[can_you] cancel it?
    stop my order before it ships ~[please?]
    ~[can_i] cancel even if the order is already processing?
    cancel the @[product] i ordered ~[recently]
    there's no cancel button in ~[app], how do i cancel my order?
    i accidentally placed the same order twice, cancel one of them
    i no longer need ~[order_ref], can you cancel it?
    what happens if i cancel my order now?
    i'd like to withdraw ~[order_ref] before it's dispatched

%[modify_order] -> Sure. I've updated your order with the changes you asked for, \
and you'll get a new confirmation email shortly.
    ~[i_want] change the ~[detail] on ~[order_ref]
    ~[can_i] add another item to my existing order?
    i ordered the wrong ~[detail], can i change it before it ships?
    please update the quantity in ~[order_ref] to (two|three|four)
    ~[can_i] swap the @[product] in my order for a different one?
    how do i edit an order i already placed?
    i forgot to add the @[product] to my order
    ~[can_i] remove one item from ~[order_ref]?
    i need to change my order, it hasn't shipped yet
    is it possible to modify an order after paying?
    please change the ~[detail] of the @[product] in my order
    i picked the wrong option when ordering, can you fix it?
    can you update ~[order_ref] to include the @[product] too?
    i'd like to make a change to ~[order_ref] before you send it

%[missing_order_confirmation] -> Sorry about that. Your order went through, and I've resent \
the confirmation email; please check your spam folder too.
    i didn't get an order confirmation email
    did my order go through? i never received a confirmation
    i placed an order but got no confirmation
    ~[can_you] resend my order confirmation?
    ~[how_do_i] know if my order was placed successfully?
    the payment went through but i have no confirmation email
    i don't see my order in my order history
    i'm not sure my order worked, nothing happened after i paid
    where is my order confirmation? i've checked my spam folder
    i haven't received an order number
    was my order actually placed?
    i bought the @[product] ~[recently] and never got a confirmation
    the confirmation email for ~[order_ref] never arrived
    can you check if my order exists? i got no email

%[wrong_item_received] -> I'm sorry you received the wrong item. I'll send the correct one \
right away and email you a prepaid label for the wrong one.
    i received the wrong (item|product|thing)
    you sent me the wrong (product|item|size|colour)
    i ordered the @[product] but got something else
    this isn't what i ordered
    the item in the (box|package|parcel) doesn't match my order
    i got the wrong ~[detail] [in ~[order_ref]]
    my ~[package_word] had someone else's order in it
    the colour i received is different from the one i ordered
    you mixed up my order
    the @[product] you sent isn't the one i paid for
    the model you shipped is not the one i chose
    ~[why] did you send me the wrong thing? ~[frustrated]
    ~[order_ref] arrived but the item inside is not mine
    i opened the box and it's a completely different product

%[back_in_stock] -> That item is out of stock right now. Tap 'Notify me' on the product \
page and we'll email you as soon as it's available again.
    when will the @[product] be back in stock?
    is the @[product] available again?
    the item i want is ~[sold_out], will you restock it?
    ~[can_you] let me know when the @[product] is available?
    is the @[product] ever coming back?
    the @[product] says ~[sold_out], any idea when you'll have it?
    i want to buy the @[product] but it's ~[sold_out]
    will the @[product] be restocked in my size?
    how do i get an alert when an item is back in stock?
    ~[why] is everything i want ~[sold_out]?
    is there a waiting list for the @[product]?
    ~[can_i] preorder the @[product] while it's ~[sold_out]?
    do any of your stores still have the @[product]?
    are you getting more of the @[product] soon?
"""

_ACCOUNT = """\
# Account: signing up, closing, email and personal details, identity checks, passwords.
~[sign_up]
    sign up
    register
    create an account
    open an account
~[close]
    close
    delete
    deactivate
    shut down
~[id_doc]
    passport
    id card
    driving licence
    residence permit

%[create_account] -> Happy to help! Tap 'Sign up' in the app or on our website, enter your \
email and a password, and follow the link we send you.
    ~[how_do_i] ~[sign_up]?
    ~[i_want] ~[sign_up]
    i'm new here, ~[how_do_i] (get started|join|sign up)?
    ~[can_i] ~[sign_up] without a (phone number|credit card|passport)?
    what do i need to ~[sign_up]?
    i'd like to become a customer
    where's the (registration|sign up) page?
    ~[can_i] create a second account for my (business|partner|kids)?
    is it free to ~[sign_up]?
    how old do i have to be to ~[sign_up]?
    ~[can_i] join using my (Google|Apple|Facebook) account?
    ~[help_me] set up a new account
    what information do you need from me to ~[sign_up]?
    i don't have an account yet, where do i start?

%[close_account] -> I'm sorry to see you go. I've started closing your account, and \
we'll send any remaining balance to you and confirm by email.
    ~[i_want] ~[close] ~[my_account]
    please delete my account
    how do i permanently ~[close] ~[my_account]?
    i don't want to use your service anymore, close my account
    ~[can_you] remove all my data and ~[close] my account?
    what happens to my balance if i close my account?
    where is the option to deactivate my account?
    i'm leaving, please shut down my account
    ~[can_i] reopen my account later if i close it now?
    delete ~[my_account] and all my personal information ~[please?]
    i want to stop being a customer and close everything
    is there a way to ~[close] ~[my_account] from ~[app]?
    i've moved to another provider, so please close my account
    how long does it take to ~[close] ~[my_account]?

%[change_email] -> You can change your email under Settings > Profile > Email. \
We'll send a link to the new address to confirm the change.
    ~[i_want] change ~[email]
    ~[how_do_i] update the email (on|linked to) ~[my_account]?
    i no longer use that email, ~[can_you] change it?
    please switch my (login|contact) email to a new one [~[asap]]
    i lost access to my old email address, how do i replace it?
    the email on ~[my_account] is (wrong|out of date|incorrect)
    ~[can_i] use a different email to (log in|sign in)?
    i made a typo in ~[email] when i (signed up|registered), ~[can_you] fix it?
    where can i edit my contact email[ in ~[app_or_site]]?
    i got a new (work|personal) email and want to use that instead
    update ~[email] ~[please?]
    ~[can_you] send your emails to a new address from now on?
    ~[how_do_i] replace ~[email] with my new one?
    my account is still linked to my old email, how do i change it?

%[update_personal_details] -> I can help with that. You can update your name and date of \
birth under Settings > Personal details; some changes need a photo of your ID.
    ~[i_want] (change|update|correct) my name on ~[my_account]
    my name is spelled wrong (in my profile|on my account|in the app)
    i got (married|divorced) and need to update my (surname|last name)
    ~[how_do_i] fix my date of birth? it's (wrong|incorrect)
    ~[can_you] correct my (last|first|middle) name?
    my middle name is missing from ~[my_account]
    ~[how_do_i] update my personal (details|information)?
    i legally changed my name, how do i update it[ on ~[my_account]]?
    my (birthday|date of birth) is showing the wrong (year|month|day)
    where can i edit my personal information[ in ~[app]]?
    my (first|last) name has a typo, can it be fixed?
    the name on ~[my_account] is my maiden name, please change it
    ~[can_i] change the title on my account from (mr|mrs|miss) to (ms|dr)?
    my details are out of date, ~[how_do_i] edit them?

%[verify_identity] -> To verify your identity, go to Settings > Verification in the app \
and upload a photo of your ID and a selfie. It usually takes under a day.
    ~[how_do_i] verify my identity[ in ~[app]]?
    what documents do you need to verify (me|my identity|~[my_account])?
    my (id|identity) verification keeps failing
    ~[why] do you need a photo of my ~[id_doc]?
    i uploaded my ~[id_doc] but i'm still not verified
    ~[can_i] use my ~[id_doc] to verify[ ~[my_account]]?
    how long does identity verification (take|usually take)?
    the selfie check isn't working [on ~[phone]]
    ~[my_account] says unverified, what do i (do|need to do)?
    is my ~[id_doc] accepted as proof of identity?
    i don't have a passport, ~[how_do_i] (verify|prove who i am)?
    you rejected my ~[id_doc], ~[why]?
    do i need (proof of address|a utility bill) too?
    the photo of my ~[id_doc] keeps getting rejected as (blurry|unreadable)

%[reset_password] -> No problem. Tap 'Forgot password' on the sign-in screen, and we'll \
email you a link to set a new password.
    i forgot my password [again]
    ~[how_do_i] reset my password?
    ~[i_want] change my password [for ~[my_account]]
    i can't remember my (login|account) password [for ~[app_or_site]]
    the password reset link (isn't working|has expired|doesn't open) [on ~[phone]]
    send me a password reset (email|link) ~[please?]
    i never got the email to reset my password
    how do i set a new password[ for ~[my_account]]?
    my (password|old password) stopped working
    i need to update my password, it's really old
    where is the forgot password (button|link)?
    ~[can_you] help me (recover|get back) my password[ ~[asap]]?
    the new password i chose (isn't being accepted|gets rejected)
    ~[can_i] change my password from ~[app_or_site]?
"""

_SECURITY = """\
# Security: suspicious sign-ins, two-factor authentication, phishing, locks, sign-in codes.
~[signed_in]
    logged into
    signed into
    accessed
    got into
~[two_factor]
    two-factor authentication
    2fa
    two step verification
    two factor
~[code]
    verification code
    security code
    one time password
    login code
    sms code
~[scam_msg]
    an email
    a text message
    a phone call
    a message
    a letter

%[suspicious_login] -> Thank you for telling us. I've signed out all devices and secured \
your account; please set a new password now.
    someone ~[signed_in] ~[my_account] and it wasn't me
    i got an alert about a login from a device i don't (own|recognise)
    there's a sign in from @[country] and i've never been there
    ~[i_think] ~[my_account] has been hacked
    someone changed my password without my permission
    i see activity on ~[my_account] that i didn't do
    an unknown device is connected to ~[my_account]
    i got an email saying my account was ~[signed_in] from a new location
    someone else is using ~[my_account]
    my settings were changed and it wasn't me
    i think someone knows my password
    ~[how_do_i] log out all other devices? i don't trust them
    there's a login at (3 am|midnight|4 in the morning) that definitely wasn't me
    a stranger ~[signed_in] ~[my_account] ~[recently]

%[enable_two_factor] -> Good idea! Go to Settings > Security and turn on two-factor \
authentication; you can use an authenticator app or SMS codes.
    how do i turn on ~[two_factor]?
    ~[i_want] add an extra layer of security to ~[my_account]
    ~[can_i] use an authenticator app to (log in|sign in)?
    do you support ~[two_factor]?
    set up ~[two_factor] for me ~[please?]
    i'd like to require a code every time i sign in
    how do i switch my ~[two_factor] from sms to an app?
    ~[can_i] use a (security key|yubikey|passkey)?
    is ~[two_factor] available in ~[app]?
    i got a new phone, how do i move my authenticator?
    ~[i_want] turn off ~[two_factor], it's annoying
    where are the settings for ~[two_factor]?
    is ~[two_factor] mandatory?
    ~[can_you] make ~[my_account] safer with ~[two_factor]?

%[report_phishing] -> Thanks for reporting it. That message didn't come from us; please \
don't click any links, and forward it to our security team.
    i got ~[scam_msg] pretending to be from you
    is this (email|text|message|call) really from your company?
    someone called me claiming to be from your (fraud team|security department|support team)
    i got a suspicious link [by (email|text)] asking for my (password|card number|login details)
    ~[how_do_i] report a phishing (email|text|website)?
    ~[i_think] ~[scam_msg] i got is a scam using your name
    ~[scam_msg] asked me to confirm my (card details|pin|password), is that legit?
    there's a fake website that looks exactly like ~[site]
    i clicked a link in a (weird|suspicious|strange) (email|text), what should i do[ now]?
    do you ever ask for my (pin|password|card number) by (email|text)?
    someone messaged me on (WhatsApp|Facebook|Instagram) saying they're from your support team
    ~[scam_msg] says my account will be closed unless i log in, is it real?
    ~[i_want] report a scam [that uses your name]
    i got ~[scam_msg] offering me a prize from your company, is it fake?

%[locked_account] -> Your account was locked after several failed sign-in attempts. \
I've emailed you an unlock link that's valid for 24 hours.
    ~[my_account] is locked
    i got locked out of ~[app_or_site] after entering the wrong password too many times
    it says ~[my_account] is temporarily (blocked|locked|suspended)
    ~[how_do_i] unlock ~[my_account]?
    i can't get into ~[my_account], it says (locked|blocked|temporarily suspended)
    how long until ~[my_account] (unlocks|is unlocked)?
    you froze ~[my_account] and i don't know why
    i'm locked out of ~[app_or_site]
    please unlock ~[my_account] ~[asap]
    too many failed (attempts|logins) and now i can't sign in to ~[app_or_site]
    my account got disabled for security reasons
    ~[can_you] lift the lock on ~[my_account]?
    ~[why] is ~[my_account] locked?
    i've been locked out of ~[my_account] for @[time_span], please help

%[verification_code_missing] -> Sorry about that. I've sent you a new code; it can take a \
couple of minutes. Please check your phone number is correct.
    i'm not getting the ~[code] [on ~[phone]]
    the ~[code] never arrives [on ~[phone]]
    i didn't receive the ~[code]
    ~[can_you] resend the ~[code]?
    the ~[code] you sent has expired
    where's my ~[code]? i've been waiting for ages
    my ~[code] isn't coming through on ~[phone]
    the ~[code] goes to my old number
    i keep requesting a code [on ~[app_or_site]] but nothing comes
    the ~[code] i got doesn't work
    i never receive the email with the code
    how long does the ~[code] take to arrive?
    ~[why] am i not getting any codes by (sms|text|email)?
    i'm stuck on the screen waiting for the ~[code]
"""

_TECHNICAL = """\
# Technical: app crashes, website errors, notifications, installing the app, language.
~[crashes]
    crashes
    freezes
    shuts down
    closes by itself
    quits
@[browser]
    Chrome
    Safari
    Firefox
    Edge
@[language]
    Spanish
    French
    German
    Portuguese
    Italian
    Polish
    Arabic
    Japanese
    Dutch
    Turkish
~[notifications]
    notifications
    push notifications
    alerts

%[app_crashing] -> Sorry about that. Please update the app and restart your phone; \
if it still crashes, reinstalling it usually fixes it.
    ~[app] keeps (crashing|freezing|shutting down)
    the app closes as soon as i open it
    the app freezes on the loading screen
    ~[app] ~[crashes] every time i open the payments screen
    ~[app] ~[crashes] on ~[phone]
    the app stopped working after the latest update
    i can't open the app, the screen just goes black
    the app is stuck and won't respond
    ~[why] does the app keep closing by itself?
    the app quits in the middle of what i'm doing
    the app is frozen [on ~[phone]], what should i do?
    i reinstalled the app and it still ~[crashes]
    ~[app] ~[crashes] whenever i try to (log in|check my balance|make a payment)
    the app opens for a second and then ~[crashes]

%[website_error] -> Sorry for the trouble. Please clear your browser cache or try another \
browser; if it still fails, send us a screenshot of the error.
    ~[site] won't (load|open) [on my laptop]
    i'm getting an error page on ~[site] [whenever i try to (log in|pay|check out)]
    your site says (500 internal server error|service unavailable|something went wrong)
    the (checkout|payment|contact) page (is broken|won't load|shows an error)
    the page keeps (spinning|loading) and never (finishes|opens) [in @[browser]]
    ~[site] isn't working in @[browser]
    i see a blank white page when i open ~[site]
    the buttons on ~[site] don't do anything when i click them [in @[browser]]
    is ~[site] down [right now] or is it just me?
    the web page shows a weird error message [when i try to pay]
    i get a 404 when i click the link in your (email|newsletter)
    ~[site] is really slow today
    i can't get past the homepage on ~[site] [using @[browser]]
    ~[site] looks broken in @[browser], half the page is missing

%[notifications_issue] -> Let's fix that. Check that notifications are allowed for the \
app in your phone settings and turned on under Settings > Notifications.
    i'm not getting any ~[notifications] [from ~[app]]
    ~[notifications] stopped working on ~[phone]
    ~[app] doesn't send me ~[notifications] about (payments|purchases|my balance) anymore
    ~[how_do_i] turn off ~[notifications]?
    i get (too many|way too many) ~[notifications]
    i don't get ~[notifications] when money arrives
    ~[notifications] are switched on but nothing shows up
    how can i choose which ~[notifications] i get[ from ~[app]]?
    ~[app] spams me with ~[notifications] at night
    i stopped getting email ~[notifications] from you
    ~[can_i] get ~[notifications] by sms instead?
    my notification settings keep resetting
    ~[why] are my ~[notifications] delayed by hours?
    ~[i_want] mute the marketing ~[notifications]

%[install_app] -> Our app is free on the App Store and Google Play and works on recent \
iOS and Android versions. Search for our name to download it.
    where can i download ~[app][ for ~[phone]]?
    is there an app for (iphone|ipad|apple watch)?
    does the app work on (android|my Samsung|a Pixel)?
    i can't install ~[app] on ~[phone]
    ~[phone] says the app isn't compatible
    is ~[app] available in @[country]?
    ~[how_do_i] get the app on my (tablet|second phone|work phone)?
    the download keeps failing in the (play store|app store) [on ~[phone]]
    what's the minimum (android|iOS) version for the app?
    ~[can_i] use the app on a (Huawei phone|Kindle|Chromebook)?
    is there a desktop app for (mac|windows|linux)?
    the app store says the app isn't available [in my region]
    how much space does the app need on ~[phone]?
    ~[tell_me] where i can get the official app

%[change_app_language] -> You can change the app language under Settings > Language; on \
the website, pick a language at the bottom of any page.
    how do i change the language of ~[app_or_site]?
    ~[app] is in the wrong language
    ~[can_i] switch the app to @[language]?
    ~[site] is showing in @[language] and i can't read it
    is ~[app] available in @[language]?
    how do i set the language back to english?
    the app changed language by itself after an update
    i want your emails in @[language]
    where is the language setting?
    ~[can_you] add support for @[language]?
    i accidentally set the app to a language i don't understand
    the app ignores my phone's language
    ~[i_want] use ~[app] in @[language]
    is there a @[language] version of ~[site]?
"""

_PAYMENTS = """\
# Payments: sending money, pending transfers, cancelling transfers, payment methods, rates.
~[send]
    send
    transfer
    pay
    wire
~[transfer]
    transfer
    payment
    bank transfer
~[person]
    my sister
    my landlord
    a friend
    my mum
    a colleague
    my son

%[send_money] -> You can send money in the app: tap 'Send', choose the recipient, enter \
the amount and confirm. Most transfers arrive within one business day.
    ~[how_do_i] ~[send] money to ~[person]?
    ~[i_want] ~[send] @[amount] to ~[person]
    how can i pay someone using their bank details?
    ~[can_i] send money abroad?
    what's the best way to transfer money to another bank?
    how do i make a bank transfer?
    i need to pay my rent by transfer
    ~[can_i] ~[send] @[amount] to someone who isn't a customer?
    how do i add a new payee?
    ~[can_i] move money to my savings account?
    ~[i_want] (send|wire) money to @[country]
    where do i enter the iban to send money?
    what's the most i can transfer in one day?
    ~[help_me] ~[send] @[amount] to ~[person]

%[transfer_pending] -> I've checked your transfer and it's still being processed. Most \
transfers arrive within one business day; international ones take up to 5.
    my ~[transfer] is still pending
    the money i sent hasn't arrived
    ~[person] hasn't received the @[amount] i sent ~[recently]
    ~[why] is my ~[transfer] taking so long?
    it's been @[time_span] and the ~[transfer] still shows as processing
    the recipient says they never got my money
    how long do transfers take to arrive?
    where is the ~[transfer] i made ~[recently]?
    the money left my account but didn't reach the other bank
    is there a delay with bank transfers today?
    my ~[transfer] to my landlord hasn't cleared yet
    my international ~[transfer] is stuck
    ~[person] is still waiting for the money i sent @[time_span] ago
    the ~[transfer] shows as sent but nothing arrived on the other side

%[cancel_transfer] -> If the transfer hasn't been processed yet, I can cancel it now; if \
it has, we'll ask the receiving bank to return the money.
    ~[can_i] cancel a transfer i just made?
    i sent money to the wrong person
    ~[i_want] stop a ~[transfer] i made by mistake
    please reverse my last ~[transfer]
    i typed the wrong account number, ~[can_you] cancel it?
    how do i undo a bank transfer?
    i sent @[amount] instead of @[amount], can you stop it?
    cancel the scheduled ~[transfer] for tomorrow
    is it possible to recall money i sent to the wrong iban?
    i need to cancel my standing order
    the ~[transfer] hasn't gone through yet, can you stop it?
    i need to pull back a ~[transfer] i shouldn't have made
    ~[how_do_i] cancel a recurring ~[transfer] to ~[person]?
    oops, i just paid the wrong account, can this be undone?

%[add_payment_method] -> You can add a payment method under Settings > Payment methods: \
choose a card, bank account or PayPal, enter the details and save.
    how do i add a new payment method[ to ~[my_account]]?
    ~[i_want] add (PayPal|Apple Pay|Google Pay|a new card) to my account
    ~[can_i] pay with (Apple Pay|Google Pay|PayPal)[ on ~[site]]?
    ~[how_do_i] save a new card for (payments|future purchases)?
    ~[i_want] change my default payment method
    ~[can_i] link my (bank account|savings account) for payments?
    ~[how_do_i] remove an old card from ~[my_account]?
    ~[tell_me] which payment methods you accept [on ~[app_or_site]]
    the card on file (expired|was replaced), how do i update it?
    ~[can_i] pay with a (gift card|voucher)?
    i want to use a different card for my (purchases|orders)
    is it possible to pay by bank transfer instead of card?
    where do i manage my saved payment methods?
    ~[help_me] update the card i use to pay

%[exchange_rate] -> We use the market rate with a small markup, and you always see the \
exact rate before you confirm. You can check today's rate under 'Exchange'.
    what exchange rate do you use?
    how much is @[amount] in @[currency]?
    what's today's rate for @[currency]?
    how do you calculate currency conversion?
    ~[why] did i get a worse exchange rate than google shows?
    is there a markup on the exchange rate?
    i paid in @[currency], what rate was applied?
    ~[can_i] convert my money to @[currency] in the app?
    the exchange rate on my transaction looks wrong
    ~[can_i] lock in an exchange rate before i travel?
    does the rate change on weekends?
    how many @[currency] will i get for @[amount]?
    what's the conversion rate from @[currency] to @[currency]?
    are your exchange rates better than a bank's?
"""

_SUBSCRIPTIONS = """\
# Subscriptions: cancelling, changing plans, pausing, renewals and free trials.
@[plan_name]
    premium
    plus
    family
    pro
    basic
    student
    business
~[subscription]
    subscription
    membership
    plan

%[cancel_subscription] -> I'm sorry to see you go. I've cancelled your subscription; \
you'll keep access until the end of this billing period.
    ~[i_want] cancel my ~[subscription]
    how do i stop my monthly ~[subscription]?
    please end my @[plan_name] plan
    i don't want to renew my ~[subscription]
    turn off auto renewal ~[please?]
    ~[can_i] unsubscribe from the @[plan_name] plan?
    stop charging me every month for the ~[subscription]
    i'd like to end my ~[subscription] at the end of this month
    ~[how_do_i] cancel my free trial before it charges me?
    where is the cancel subscription button?
    i no longer use the service, cancel my ~[subscription]
    will i be charged if i cancel my ~[subscription] today?
    i want to quit my ~[subscription]
    ~[help_me] cancel the @[plan_name] ~[subscription]

%[change_plan] -> Sure! You can switch plans anytime under Settings > Subscription. \
Upgrades apply right away and downgrades at your next renewal.
    ~[i_want] upgrade to the @[plan_name] plan
    how do i switch to a cheaper plan?
    ~[can_i] downgrade my ~[subscription]?
    what's the difference between the @[plan_name] and @[plan_name] plans?
    i'd like to move from monthly to yearly billing
    change my plan to @[plan_name] ~[please?]
    how much more is the @[plan_name] plan?
    ~[can_i] add more users to my plan?
    is there a plan with more features than mine?
    i need a bigger plan for my team
    will i lose features if i downgrade?
    ~[can_i] switch plans in the middle of the month?
    ~[how_do_i] go from @[plan_name] to @[plan_name]?
    is it possible to upgrade my ~[subscription] just for one month?

%[pause_subscription] -> Yes, you can pause your subscription for up to three months \
under Settings > Subscription, and you won't be charged while it's paused.
    ~[can_i] pause my ~[subscription]?
    ~[i_want] put my ~[subscription] on hold
    i'm travelling for @[time_span], can i freeze my plan?
    is there a way to take a break from my ~[subscription] without cancelling?
    how long can i pause my ~[subscription] for?
    pause my @[plan_name] ~[subscription] until next month
    how do i resume my paused ~[subscription]?
    will i be charged while my ~[subscription] is paused?
    i don't need the service this summer, can i suspend it?
    ~[i_want] skip a month of my ~[subscription]
    ~[can_i] temporarily stop my ~[subscription]?
    when does my paused plan start again?
    ~[help_me] put my @[plan_name] plan on hold

%[renewal_date] -> Your subscription renews automatically on the same day each period. \
You can see the next renewal date and amount under Settings > Subscription.
    when does my ~[subscription] renew?
    what date will i be charged next for my ~[subscription]?
    ~[tell_me] when my next (renewal|payment for the plan) is
    ~[how_do_i] find out when my ~[subscription] expires?
    does my ~[subscription] renew automatically?
    when does my (annual|yearly|monthly) ~[subscription] end?
    ~[i_want] know my next billing date for the ~[subscription]
    how many days are left in my current (plan|billing period)?
    will i get a reminder before my ~[subscription] renews?
    my ~[subscription] renewed earlier than i expected, ~[why]?
    what's the renewal price for next (year|month)?
    is my @[plan_name] ~[subscription] monthly or yearly?
    ~[tell_me] when my @[plan_name] plan runs out

%[free_trial] -> New members get a free 30-day trial. You won't be charged until the trial \
ends, and we'll remind you three days before.
    how long is the free trial[ for the @[plan_name] plan]?
    do you offer a free trial[ for new customers]?
    will i be charged when my trial (ends|runs out)?
    ~[can_i] try the @[plan_name] plan for free?
    do i need to enter (card details|a payment method) for the [@[plan_name]] trial?
    i already used my trial, can i get another one?
    what features are included in the (trial|free trial)?
    my trial ended early, ~[why]?
    ~[can_i] extend my free trial?
    ~[tell_me] when my (trial|free trial) expires
    is the trial available to existing customers?
    ~[how_do_i] start a free trial[ of the @[plan_name] plan]?
    is there a free trial for the @[plan_name] ~[subscription]?
    ~[i_want] test the service before paying, is there a trial?
"""

_RETURNS = """\
# Returns: starting a return, return labels, the return policy, exchanges, drop-off.
~[send_back]
    return
    send back
    give back
~[colour_size]
    black
    blue
    a smaller size
    a bigger size
    a medium
    a large

%[start_return] -> I can help with that. Go to Orders, select the item and tap 'Return \
item'; we'll email you a prepaid return label.
    ~[i_want] ~[send_back] the @[product]
    how do i send back an item?
    i'd like to return ~[order_ref]
    ~[can_i] return something i bought online?
    the @[product] isn't right for me, i want to send it back
    how do i start a return?
    i'm not happy with the @[product] and want to return it
    ~[can_you] help me return part of my order?
    i need to return a gift i received
    where do i request a return?
    the @[product] is faulty, i want to (return it|send it back)
    ~[help_me] ~[send_back] the @[product] i bought ~[recently]
    i'd like to open a return for one item in ~[order_ref]
    the @[product] isn't what i expected, so i'm sending it back

%[return_label] -> I've emailed you a prepaid return label. Print it, stick it on the \
package and drop it off at any post office.
    i need a return label [for ~[order_ref]] ~[asap]
    where do i find my return (shipping label|label)?
    ~[can_you] (email|send) me a return label?
    i didn't get a label for my return
    i don't have a printer, how do i get the label?
    the return label you sent doesn't work
    is the return label prepaid?
    ~[can_i] get a qr code instead of a printed label?
    my return label (expired|is no longer valid)
    i lost the return label that came in the box
    ~[how_do_i] print the label for my return?
    the barcode on my return label won't scan
    ~[can_you] send a new label for my @[product] return?
    the return label has the wrong address on it

%[return_policy] -> You can return most items within 30 days of delivery if they're unused \
and in their original packaging. Returns are free.
    what's your return policy?
    how many days do i have to return something?
    ~[can_i] return an item after 30 days?
    ~[can_i] return something i've already used?
    are sale items returnable?
    do i need the original packaging to make a return?
    is it too late to return the @[product] i bought ~[recently]?
    do i have to pay for return shipping?
    which items can't be returned?
    ~[can_i] return the @[product] without a receipt?
    do you accept returns on opened items?
    what condition does an item need to be in for a return?
    is the return window longer over the holidays?
    are returns free or do you charge for them?

%[exchange_item] -> No problem! Go to Orders, pick the item and choose 'Exchange'; we'll \
ship the new one as soon as we receive the original.
    ~[can_i] exchange the @[product] for a different size?
    ~[i_want] swap this for another colour
    how do i exchange an item?
    the @[product] is too small, can i get a bigger one instead?
    i'd like to exchange my order for a different model
    is it possible to swap the item instead of getting a refund?
    ~[can_i] trade the @[product] for something else of the same price?
    i want the same @[product] but in ~[colour_size]
    how long does an exchange take?
    ~[can_i] exchange a gift for something i like more?
    i'd rather have a replacement than my money back
    do exchanges cost anything?
    ~[can_you] send me the @[product] in ~[colour_size] and take this one back?
    i need to change the @[product] i received for ~[colour_size]

%[return_dropoff] -> You can drop your return at any post office or partner pickup point, \
or book a free courier pickup from home in the app.
    where can i drop off my return[ for ~[order_ref]]?
    ~[can_you] pick up my return from my (house|office|flat)?
    how do i get my return package back to you?
    is there a drop off point near me?
    ~[can_i] return the item (in store|at a shop|in person)?
    ~[how_do_i] schedule a courier pickup for my return?
    which post office takes your returns?
    ~[can_i] drop off my return at a @[carrier] location?
    the courier didn't come to collect my return
    ~[can_i] bring the @[product] back to a shop instead of mailing it?
    what's the nearest place to hand in a return?
    ~[i_want] book a (collection|pickup) for my return
    do i have to take the return to the post office myself?
"""

_REFUNDS = """\
# Refunds: asking for one, its status, wrong amounts, where it is paid, rejected refunds.
~[refund]
    refund
    reimbursement
    refund payment

%[request_refund] -> I'm sorry about that. I've requested a refund for you; it will go \
back to your original payment method within 5 to 10 business days.
    i want a full refund
    ~[i_want] get my money back for ~[order_ref]
    ~[can_i] get a refund for the @[product]?
    please refund me, the service was never provided
    i was promised a refund, how do i request it?
    how do i ask for a refund?
    the event was cancelled, so i want my money back
    ~[can_you] refund the @[amount] i paid?
    i think i deserve a refund for this
    i paid for express delivery but it came late, can i get that fee back?
    refund my purchase ~[please?]
    what do i need to do to get reimbursed?
    ~[i_want] claim a ~[refund] for ~[order_ref]
    i'm requesting a ~[refund] because the @[product] never worked

%[refund_status] -> I've checked, and your refund has been processed. Depending on your \
bank, it can take 5 to 10 business days to appear.
    where is my ~[refund]?
    i still haven't received my ~[refund]
    when will i get my money back?
    how long do refunds (take|usually take)[ to show up on ~[my_card]]?
    you said you'd refund me @[time_span] ago and nothing yet
    has my ~[refund] [for ~[order_ref]] been processed?
    ~[can_you] check the status of my ~[refund]?
    my ~[refund] isn't showing in my account
    the ~[refund] for ~[order_ref] hasn't arrived
    i returned the item ~[recently] but there's no refund yet
    is my ~[refund] on its way?
    it's been @[time_span], where's my money?
    any update on the ~[refund] i was promised?

%[refund_amount_wrong] -> I'm sorry about that. I've asked our team to send the missing \
part of your refund; you'll see it within 5 business days.
    i got less money back than i paid for ~[order_ref]
    my ~[refund] was only partial
    the refund amount is wrong
    you refunded @[amount] but i paid @[amount]
    ~[why] didn't i get the full ~[refund]?
    you took the shipping cost out of my refund, why?
    i was refunded for one item instead of two
    the refund didn't include the delivery charge
    part of my ~[refund] is missing
    my ~[refund] is short by @[amount]
    ~[i_think] you miscalculated my ~[refund]
    i was refunded in a different currency and lost money
    the refund doesn't match what i was charged

%[refund_method] -> Refunds normally go back to the original payment method. If that card \
is closed, we can send it to another account or as store credit.
    can the ~[refund] go to a different (card|account)?
    my old card is (cancelled|closed|expired), where will my ~[refund] go?
    ~[can_i] get my ~[refund] as store credit[ instead]?
    i'd prefer the ~[refund] to go to my (bank account|savings account)
    will the ~[refund] go back to (PayPal|my credit card|my original card)?
    ~[can_you] send my ~[refund] by bank transfer?
    i paid with a gift card, how will i be refunded?
    ~[can_i] have (cash|a bank transfer) instead of a voucher[ for ~[order_ref]]?
    ~[tell_me] which account the ~[refund] will be paid into
    i want the ~[refund] (on|paid to) my new (card|debit card|credit card)
    ~[can_i] choose how i get my money back?
    is it possible to get the ~[refund] as a gift card?
    ~[can_you] refund me to a different account than the one i paid with?

%[refund_rejected] -> I'm sorry your refund was declined. I've asked a specialist to review \
the decision, and you'll get an email with the outcome soon.
    ~[why] was my ~[refund] request (denied|rejected|declined)?
    you rejected my ~[refund] request [for ~[order_ref]]
    my ~[refund] was declined, can you explain[ why]?
    i got an email saying i'm not eligible for a (refund|reimbursement)
    how do i appeal a (refused|rejected) ~[refund]?
    ~[why] can't i get a refund[ for ~[order_ref]]?
    my ~[refund] claim was turned down unfairly
    you won't refund me even though the item was (broken|damaged|faulty)
    ~[can_you] have someone review my rejected ~[refund]?
    the refund request says not approved
    i don't agree with the decision on my ~[refund]
    my ~[refund] was cancelled without any explanation
    ~[why] was my ~[refund] refused when i followed all the rules?
"""

_CARDS = """\
# Cards: activation, declined payments, lost or stolen cards, PINs, delivery and limits.
~[card]
    card
    debit card
    credit card
    bank card
~[new_card]
    new card
    replacement card
    new debit card
    card

%[activate_card] -> You can activate your card in the app under Cards > Activate, or by \
making a first payment with your PIN.
    ~[how_do_i] activate my ~[new_card]?
    i got my ~[new_card], what do i do now?
    the ~[card] says it needs to be activated
    ~[i_want] activate ~[my_card]
    my ~[new_card] isn't working, is it activated?
    where do i activate the card you sent me[ in ~[app]]?
    ~[can_you] turn on my ~[new_card]?
    does my replacement card need to be activated?
    i can't find the activate button for my card
    activating the ~[card] in ~[app] isn't working
    is my ~[new_card] ready to use?
    the activation code for my ~[card] doesn't work [in ~[app]]
    ~[help_me] activate the ~[card] that just arrived

%[card_declined] -> I'm sorry your card was declined. Please check that it isn't frozen \
in the app and that you have enough balance.
    ~[my_card] was declined
    my payment at @[merchant] didn't go through, the card was refused
    ~[why] does my ~[card] keep getting declined?
    the ~[card] was rejected at the shop
    i couldn't pay with ~[my_card] ~[recently]
    ~[my_card] doesn't work online
    the atm refused ~[my_card]
    i tried to pay and it said transaction declined
    my contactless payments keep failing
    ~[my_card] works in stores but not online
    ~[my_card] isn't working abroad
    i have money in my account but ~[my_card] is declined
    ~[why] was ~[my_card] rejected at @[merchant]?

%[report_lost_card] -> I've frozen your card so no one can use it. You can order a \
replacement in the app under Cards; it arrives in 5 to 7 business days.
    i lost ~[my_card]
    ~[my_card] was stolen
    i can't find my ~[card] anywhere
    someone stole my wallet with ~[my_card] in it
    please block my ~[card], i lost it
    ~[how_do_i] freeze ~[my_card]?
    i left ~[my_card] in an atm
    ~[my_card] is missing
    ~[i_think] i dropped ~[my_card] somewhere
    my purse was stolen with all my cards
    i need a new card because i lost mine ~[recently]
    ~[how_do_i] report a stolen ~[card]?
    ~[my_card] was taken ~[recently], please stop it

%[change_pin] -> You can change your PIN in the app under Cards > Change PIN, or at any \
ATM. If you forgot it, you can view it in the app.
    ~[how_do_i] change my pin?
    i forgot my ~[card] pin
    ~[i_want] set a new pin [for ~[my_card]]
    ~[can_i] see my pin in ~[app]?
    my pin is blocked after too many wrong tries
    how do i reset the pin on ~[my_card]?
    i entered the wrong pin (three times|too many times) [at the atm]
    ~[can_i] choose my own pin?
    where can i find the pin for my ~[new_card]?
    ~[i_want] change my pin to something easier to remember
    ~[can_you] send me my pin again?
    ~[how_do_i] unblock my pin[ on ~[my_card]]?
    what's the pin for ~[my_card]? i never got it

%[card_not_arrived] -> Cards usually arrive within 5 to 7 business days. If it's been \
longer, I can cancel the one we sent and order a new card.
    my ~[new_card] hasn't arrived yet[, ~[frustrated]]
    when will my ~[new_card] be delivered?
    i ordered a ~[card] @[time_span] ago and still don't have it
    i'm still waiting for my (replacement|new) card
    how long does it take to get my ~[new_card][ in the post]?
    where is the card you (sent|posted) me ~[recently]?
    ~[can_i] track the delivery of my ~[new_card]?
    my ~[new_card] never came in the (mail|post)
    ~[i_think] my ~[new_card] was sent to my old address
    ~[why] is my ~[new_card] taking so long to arrive?
    i haven't got my ~[card] yet, ~[can_you] send another one?
    has my ~[new_card] been (posted|sent out)?

%[card_spending_limit] -> You can view and adjust your card limits in the app under \
Cards > Limits; increases above the standard limit may need a quick review.
    how do i (increase|raise) my ~[card] limit?
    what's the maximum i can spend with my ~[card][ per day]?
    ~[my_card] hit the (daily|monthly) limit
    ~[can_you] raise my atm withdrawal limit?
    ~[i_want] lower the spending limit on ~[my_card]
    i need a higher limit for a (big purchase|trip abroad|new laptop)
    how much can i take out at an atm per day?
    the payment failed because it was over my limit
    ~[can_i] set a monthly spending cap on ~[my_card]?
    is there a limit on online payments with my ~[card]?
    ~[can_i] change the contactless limit[ on ~[my_card]]?
    ~[tell_me] what the limits on ~[my_card] are
    ~[help_me] raise the limit on ~[my_card]
"""

TOPIC_GRAMMARS: dict[str, str] = {
    "billing": _BILLING,
    "support": _SUPPORT,
    "shipping": _SHIPPING,
    "account": _ACCOUNT,
    "refunds": _REFUNDS,
    "technical": _TECHNICAL,
    "orders": _ORDERS,
    "security": _SECURITY,
    "payments": _PAYMENTS,
    "subscriptions": _SUBSCRIPTIONS,
    "returns": _RETURNS,
    "cards": _CARDS,
}
"""Topic name -> grammar text, parsed together with ``COMMON_GRAMMAR``."""

OUT_OF_SCOPE_GRAMMAR = """\
# Themes a customer-support agent should not answer. Intents carry no response.
~[sport_team]
    the Lakers
    Real Madrid
    the Yankees
    Manchester United
    the Chicago Bulls
    Barcelona
~[dish]
    lasagna
    banana bread
    a chocolate cake
    pancakes
    chicken curry
    sourdough bread
    a vegetable soup
~[city]
    Paris
    Tokyo
    New York
    Rome
    Lisbon
    Barcelona
    Bangkok
~[artist]
    Taylor Swift
    the Beatles
    Beyonce
    Ed Sheeran
    Drake
    Adele
~[math_problem]
    2x + 5 = 15
    the square root of 144
    15 percent of 80
    the area of a circle with radius 3
    the derivative of x squared
    12 times 17

%[ask_weather]
    what's the weather like today?
    is it going to rain tomorrow?
    what's the forecast for ~[city] this weekend?
    do i need an umbrella today?
    how hot will it be on saturday?
    will it snow this week?
    what's the temperature outside right now?
    is it sunny in ~[city]?
    should i wear a jacket today?
    when is the storm supposed to hit?

%[sports_talk]
    who won the game last night?
    do you think ~[sport_team] will win on sunday?
    what's the score of the match?
    who's your favourite football team?
    when does the world cup start?
    how many titles have ~[sport_team] won?
    is ~[sport_team] playing tonight?
    who is the best basketball player of all time?
    can you tell me the premier league table?
    did you watch the final?

%[cooking_recipe]
    how do i make ~[dish]?
    what can i cook with chicken and rice?
    give me a recipe for ~[dish]
    how long do i boil an egg?
    what temperature should i bake ~[dish] at?
    can i replace butter with oil in ~[dish]?
    what should i make for dinner tonight?
    how do you make pasta sauce from scratch?
    what's a quick vegetarian lunch idea?
    how many cups of flour go into ~[dish]?

%[trivia_question]
    what's the capital of Australia?
    how tall is the Eiffel Tower?
    who painted the Mona Lisa?
    how many planets are in the solar system?
    when did world war two end?
    what's the longest river in the world?
    who invented the light bulb?
    how far is the moon from earth?
    what is the largest animal on earth?
    which country has the most people?

%[tell_joke]
    tell me a joke
    do you know any good jokes?
    make me laugh
    say something funny
    tell me a knock knock joke
    i'm bored, cheer me up with a joke
    do you know a pun about cats?
    what's the funniest thing you know?
    give me a dad joke
    got any riddles for me?

%[travel_tips]
    what should i see in ~[city]?
    what's the best time of year to visit ~[city]?
    can you recommend a hotel in ~[city]?
    what should i pack for a beach holiday?
    is ~[city] safe for tourists?
    how many days do i need in ~[city]?
    what are some cheap places to travel in europe?
    do i need a visa to visit Japan?
    what's the best way to get around ~[city]?
    any tips for a long flight?

%[health_advice]
    i have a headache, what should i take?
    how much water should i drink a day?
    is it normal to feel dizzy after running?
    what's a good diet to lose weight?
    how many hours of sleep do i need?
    can you recommend something for a sore throat?
    is coffee bad for you?
    how do i get rid of a cold fast?
    what exercises are good for back pain?
    should i see a doctor about a rash?

%[politics]
    who should i vote for?
    what do you think about the president?
    which political party is better?
    what's your opinion on the new tax law?
    are you left wing or right wing?
    who will win the next election?
    what do you think about immigration?
    is the government doing a good job?
    explain the latest election results to me
    do you support the new policy on climate?

%[music_talk]
    what's your favourite song?
    can you recommend some music for studying?
    when is ~[artist] touring next?
    what's the best album of all time?
    who sings this song that goes la la la?
    do you like ~[artist]?
    suggest a good playlist for a road trip
    what genre is ~[artist]?
    how do i learn to play the guitar?
    what are the top songs this week?

%[movie_recommendation]
    can you recommend a good movie?
    what should i watch tonight?
    is the new superhero film any good?
    what's a good comedy series to binge?
    who directed Inception?
    what movies are in cinemas this weekend?
    suggest a horror film for halloween
    what's the best show on Netflix right now?
    who won the oscar for best actor?
    is there a sequel to that movie coming out?

%[math_homework]
    can you solve ~[math_problem] for me?
    what is ~[math_problem]?
    help me with my algebra homework
    how do i calculate ~[math_problem]?
    what's the answer to question five on my worksheet?
    can you explain fractions to me?
    how do you find ~[math_problem]?
    i'm stuck on my geometry assignment
    what's the formula for the volume of a sphere?
    check my answer for ~[math_problem]

%[personal_chitchat]
    how are you today?
    what's your name?
    are you a real person?
    do you have any hobbies?
    how old are you?
    what did you do this weekend?
    do you like your job?
    where do you live?
    do you have a favourite colour?
    want to be friends?
    what do you dream about?

%[philosophy_question]
    what is the meaning of life?
    do you believe in fate?
    is there life on other planets?
    what happens after we die?
    are humans naturally good?
    does free will exist?
    what makes a person happy?
    is time travel possible?
"""
